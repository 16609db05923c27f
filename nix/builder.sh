# The builder of every self-contained request-pack image: run by Debian's static
# busybox (``${busybox}/bin/sh``) inside the Nix sandbox, with nothing else.
#
# 1. unpack Python from the locked .debs (ar + unxz + tar, no maintainer
#    scripts: the interpreter and its stdlib need none of them);
# 2. run that interpreter through the unpacked ld.so with LD_LIBRARY_PATH-style
#    --library-path, so no file of the host or of nixpkgs is used;
# 3. nix/witness.py checks every base tar against the locked .debs (each file a
#    .deb ships is there with the .deb's bytes);
# 4. python3 -m packager.image.writer.ociplan executes the build plan (the one
#    `request-pack build` executes, with store paths for cache paths): layers,
#    configs, manifests, index, with packager/image/writer/{oci,layers}.py.
#
# Environment (set by the derivation): busybox, pythonDebs, ociPy, layersPy,
# ociplanPy, witnessPy, planPath, witnessPath, libdir (multiarch directory, e.g. x86_64-linux-gnu),
# loader (ld.so name), pythonExe (the interpreter's file name, e.g. python3.11: the
# base suite's, named in packager/platforms.py), out.
set -eu
bb="$busybox/bin/busybox"
root="$TMPDIR/python"
lib="$TMPDIR/lib"
"$bb" mkdir -p "$root" "$lib/packager" "$TMPDIR/ar"

for deb in $pythonDebs; do
    cd "$TMPDIR/ar"
    "$bb" ar -x "$deb"
    member=$(echo data.tar.*)
    case "$member" in
        data.tar.xz) "$bb" unxz -c data.tar.xz | "$bb" tar -x -C "$root" ;;
        data.tar.gz) "$bb" tar -xz -f data.tar.gz -C "$root" ;;
        data.tar) "$bb" tar -x -f data.tar -C "$root" ;;
        *) echo "request-pack nix builder: $deb has data member '$member', which busybox cannot unpack" >&2; exit 1 ;;
    esac
    "$bb" rm -f data.tar* control.tar* debian-binary
done
cd "$TMPDIR"

"$bb" mkdir -p "$lib/packager/image/writer"
"$bb" cp "$ociPy" "$lib/packager/image/writer/oci.py"
"$bb" cp "$layersPy" "$lib/packager/image/writer/layers.py"
"$bb" cp "$ociplanPy" "$lib/packager/image/writer/ociplan.py"
: > "$lib/packager/__init__.py"
: > "$lib/packager/image/__init__.py"
: > "$lib/packager/image/writer/__init__.py"

# -S: no site (nothing to find); -B: write no .pyc into the unpacked tree.
python() {
    PYTHONHOME="$root/usr" PYTHONPATH="$lib" PYTHONHASHSEED=0 LC_ALL=C \
        "$root/lib/$libdir/$loader" --library-path "$root/lib/$libdir:$root/usr/lib/$libdir" \
        "$root/usr/bin/$pythonExe" -S -B "$@"
}
python "$witnessPy" "$witnessPath"
python -m packager.image.writer.ociplan "$planPath" "$out"
