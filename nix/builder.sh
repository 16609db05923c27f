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
#    configs, manifests, index, with packager/image/writer/{oci,layers}.py;
# 5. a second writer: GNU tar, unpacked from the locked tar .deb, writes every
#    file layer (harness, model) of every platform again from the files Nix
#    listed (gnuTarLayers); the sha256 of its tar must be a diff_id in one of
#    the image configs our writer made, or the build fails;
#    The base layer too: GNU tar unpacks the base tar and writes it again under
#    fakeroot (faked-sysv + libfakeroot-sysv.so from the locked builder .debs),
#    which keeps the owners and setuid/setgid modes an unprivileged builder
#    cannot put on disk; host leftovers are left out by --exclude, as
#    layers.rootfs_entries drops them;
#    and every tar is compressed by pigz (one thread, one block: zlib's deflate,
#    as Python's gzip) from the locked pigz .deb; with the header's OS byte set
#    to 255 as Python writes it, the blob's sha256 must be a layer digest of our
#    manifests, and every layer of every manifest must have been made this way;
# 6. the JSON documents a second time: Nix wrote each config, manifest and the
#    index with builtins.toJSON (jsonDocs), with placeholders that busybox fills
#    in from the layer blobs (digest, size, diff_id = sha256 of the gunzipped
#    blob) in the order our manifests list them; the index digest must be ours.
#
# Environment (set by the derivation): busybox, pythonDebs, ociPy, layersPy,
# ociplanPy, witnessPy, planPath, witnessPath, tarDebs, toolDebs (pigz, fakeroot, libfakeroot),
# gnuTarLayersPath, jsonDocsPath, libdir (multiarch directory, e.g. x86_64-linux-gnu),
# loader (ld.so name), pythonExe (the interpreter's file name, e.g. python3.11: the
# base suite's, named in packager/platforms.py), out.
set -eu
bb="$busybox/bin/busybox"
root="$TMPDIR/python"
lib="$TMPDIR/lib"
"$bb" mkdir -p "$root" "$lib/packager" "$TMPDIR/ar"

unpack() {  # unpack() ROOT DEB...: the data members of .debs, no maintainer scripts
    dest="$1"; shift
    for deb in "$@"; do
        cd "$TMPDIR/ar"
        "$bb" ar -x "$deb"
        member=$(echo data.tar.*)
        case "$member" in
            data.tar.xz) "$bb" unxz -c data.tar.xz | "$bb" tar -x -C "$dest" ;;
            data.tar.gz) "$bb" tar -xz -f data.tar.gz -C "$dest" ;;
            data.tar) "$bb" tar -x -f data.tar -C "$dest" ;;
            *) echo "request-pack nix builder: $deb has data member '$member', which busybox cannot unpack" >&2; exit 1 ;;
        esac
        "$bb" rm -f data.tar* control.tar* debian-binary
    done
    cd "$TMPDIR"
}
unpack "$root" $pythonDebs

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

# 5. GNU tar, the second writer of the file layers. Its libraries come from the
#    same locked .debs; libc and the loader from the ones Python was unpacked from.
troot="$TMPDIR/gnutar"
"$bb" mkdir -p "$troot"
unpack "$troot" $tarDebs $toolDebs
libpath="$troot/lib/$libdir:$troot/usr/lib/$libdir:$root/lib/$libdir:$root/usr/lib/$libdir"
gnutar() { LC_ALL=C "$root/lib/$libdir/$loader" --library-path "$libpath" "$troot/bin/tar" "$@"; }
pigz() { "$root/lib/$libdir/$loader" --library-path "$libpath" "$troot/usr/bin/pigz" "$@"; }
# GNU tar as root to itself: libfakeroot answers its chown/mknod/stat from faked's records and
# ignores EPERM from the real chmod (Nix's seccomp filter refuses setuid/setgid bits). The real
# chown it would also try fails with EINVAL in the sandbox's user namespace (uid 0 is not mapped),
# which it does not ignore: FAKEROOTDONTTRYCHOWN skips it, as the fakeroot script does.
fakeroot_tar() {
    FAKEROOTKEY="$fakekey" FAKEROOTDONTTRYCHOWN=1 LC_ALL=C "$root/lib/$libdir/$loader" --library-path "$libpath" \
        --preload "$troot/usr/lib/$libdir/libfakeroot/libfakeroot-sysv.so" "$troot/bin/tar" "$@"
}
# pigz's largest block, in KiB: one block means no flush inside the stream, so its deflate
# stream is zlib's one-call stream, the bytes Python's gzip (zlib, level 6) writes.
PIGZ_BLOCK_KIB=524288
layer_digests="$TMPDIR/layer-digests"  # every layer of our manifests
for m in $("$bb" grep -o 'sha256:[0-9a-f]\{64\}' "$out/index.json"); do
    for man in $("$bb" grep -o 'sha256:[0-9a-f]\{64\}' "$out/blobs/sha256/${m#sha256:}"); do
        "$bb" grep -o '"layers":.*' "$out/blobs/sha256/${man#sha256:}" | "$bb" grep -o 'sha256:[0-9a-f]\{64\}' || true
    done
done | LC_ALL=C "$bb" sort -u > "$layer_digests"
witnessed="$TMPDIR/witnessed"
: > "$witnessed"
configs="$TMPDIR/configs"
: > "$configs"
for blob in "$out"/blobs/sha256/*; do  # the image configs: small JSON blobs naming rootfs diff_ids
    if [ "$("$bb" stat -c %s "$blob")" -lt 1048576 ] && "$bb" grep -q '"diff_ids"' "$blob"; then
        "$bb" cat "$blob" >> "$configs"; echo >> "$configs"
    fi
done
checked=0
witness_tar() {  # $TMPDIR/layer.tar, GNU tar's: its sha256 must be a diff_id, pigz's gzip of it a layer digest
    digest=$("$bb" sha256sum "$TMPDIR/layer.tar" | "$bb" cut -d' ' -f1)
    if ! "$bb" grep -q "sha256:$digest" "$configs"; then
        echo "request-pack nix builder: GNU tar's $role layer (epoch $epoch) is sha256:$digest, which is no diff_id of the images our writer made" >&2
        exit 1
    fi
    echo "GNU tar agrees: $role layer (epoch $epoch) diff_id sha256:$digest"
    size=$("$bb" stat -c %s "$TMPDIR/layer.tar")
    if [ "$size" -gt $((PIGZ_BLOCK_KIB * 1024)) ]; then
        echo "request-pack nix builder: the $role layer (epoch $epoch) is $size bytes before gzip, above pigz's one-block cap of $((PIGZ_BLOCK_KIB * 1024)) bytes (-b $PIGZ_BLOCK_KIB): its gzip bytes cannot be witnessed" >&2
        exit 1
    fi
    pigz -n -6 -p 1 -b "$PIGZ_BLOCK_KIB" -c "$TMPDIR/layer.tar" > "$TMPDIR/layer.tar.gz"
    # byte 9 of the gzip header names the OS: pigz writes 3 (Unix), Python's gzip 255 (unknown)
    printf '\377' | "$bb" dd of="$TMPDIR/layer.tar.gz" bs=1 seek=9 count=1 conv=notrunc 2>/dev/null
    blob=$("$bb" sha256sum "$TMPDIR/layer.tar.gz" | "$bb" cut -d' ' -f1)
    if ! "$bb" grep -qx "sha256:$blob" "$layer_digests"; then
        echo "request-pack nix builder: pigz's gzip of the $role layer (epoch $epoch, diff_id sha256:$digest) is sha256:$blob, which is no layer digest of our manifests" >&2
        exit 1
    fi
    echo "pigz agrees: $role layer (epoch $epoch) digest sha256:$blob"
    echo "sha256:$blob" >> "$witnessed"
    checked=$((checked + 1))
    "$bb" rm -f "$TMPDIR/layer.tar" "$TMPDIR/layer.tar.gz"
}
witness_layer() {  # the staged tree of one layer, written by GNU tar
    [ -n "$role" ] || return 0
    if [ -z "$("$bb" ls -A "$stage")" ]; then  # nothing to install: GNU tar's empty archive
        gnutar --create --file="$TMPDIR/layer.tar" --format=pax --files-from=/dev/null
    else
        "$bb" find "$stage" -type d -exec "$bb" chmod 755 {} \;
        tops=$(cd "$stage" && LC_ALL=C "$bb" ls -A)
        (cd "$stage" && gnutar --create --file="$TMPDIR/layer.tar" --sort=name --mtime=@"$epoch" --clamp-mtime \
            --owner=0 --group=0 --numeric-owner --format=pax \
            --pax-option=exthdr.name=././@PaxHeader,delete=atime,delete=ctime $tops)
    fi
    witness_tar
    "$bb" rm -rf "$stage"
}
witness_base() {  # witness_base TAR: the base root filesystem, unpacked and written again by GNU tar under fakeroot
    base="$TMPDIR/base"
    "$bb" rm -rf "$base"; "$bb" mkdir -p "$base"
    # a faked of its own per base: faked keys its records by inode, and the previous base's inodes
    # (removed by busybox, which faked does not see) come back as this one's files
    fakekey=$("$root/lib/$libdir/$loader" --library-path "$libpath" "$troot/usr/bin/faked-sysv")
    fakepid=${fakekey#*:}; fakekey=${fakekey%%:*}
    fakeroot_tar --extract --file="$1" --directory="$base" --numeric-owner
    tops=$(cd "$base" && LC_ALL=C "$bb" ls -A)
    # what layers.rootfs_entries leaves out (_DROP_EXACT, _DROP_UNDER, "-old" backups, __pycache__),
    # as GNU tar exclusion patterns: anchored at the layer root, '*' crossing '/'
    (cd "$base" && fakeroot_tar --create --file="$TMPDIR/layer.tar" --sort=name --mtime=@"$epoch" --clamp-mtime \
        --numeric-owner --format=pax --pax-option=exthdr.name=././@PaxHeader,delete=atime,delete=ctime \
        --anchored --exclude=etc/hostname --exclude=etc/resolv.conf --exclude=etc/machine-id \
        --exclude=var/lib/dbus/machine-id --exclude='var/lib/dpkg/*-old' --exclude='var/cache/debconf/*-old' \
        --exclude='etc/*-old' --exclude='*/__pycache__' --exclude='dev/*' --exclude='proc/*' --exclude='sys/*' \
        --exclude='run/*' --exclude='tmp/*' --exclude='var/tmp/*' --exclude='var/log/*' --exclude='var/cache/apt/*' \
        --exclude='var/lib/apt/lists/*' $tops)
    "$bb" kill "$fakepid"
    "$bb" chmod -R u+rwX "$base"; "$bb" rm -rf "$base"
    witness_tar
}
# A wheel installed as PEP 427 says and our writer does (layers.wheel_entries), in shell:
# members by scheme, #!python scripts, console-script launchers, INSTALLER and RECORD.
tab=$(printf '\t')
record_hash() { echo "sha256=$("$bb" sha256sum "$1" | "$bb" cut -d' ' -f1 | "$bb" xxd -r -p | "$bb" base64 | "$bb" tr '+/' '-_' | "$bb" tr -d '=\n')"; }
record_row() {  # record_row TARGET: "path,hash,size" with the path relative to site-packages
    case "$1" in
        "$site"/*) rel="${1#"$site"/}" ;;
        *) rel="$up${1#usr/local/}" ;;
    esac
    echo "$rel,$(record_hash "$stage/$1"),$("$bb" stat -c %s "$stage/$1")" >> "$rows"
}
install_wheel() {  # install_wheel WHEEL FILENAME into $stage
    w="$TMPDIR/wheel"; rows="$TMPDIR/rows"
    "$bb" rm -rf "$w"; "$bb" mkdir -p "$w"; : > "$rows"
    "$bb" unzip -q -o "$1" -d "$w"
    dist_name="${2%%-*}"
    info=$(cd "$w" && for d in *.dist-info; do [ -f "$d/WHEEL" ] && echo "$d"; done | "$bb" head -n 1)
    [ -n "$info" ] || { echo "request-pack nix builder: $2: no .dist-info/WHEEL inside" >&2; exit 1; }
    data="${info%.dist-info}.data"
    (cd "$w" && "$bb" find . -type f | "$bb" sed 's|^\./||' | LC_ALL=C "$bb" sort) > "$TMPDIR/members"
    while read -r m; do
        case "$m" in "$info/RECORD"|"$info/RECORD.jws"|"$info/RECORD.p7s"|"$info/INSTALLER") continue ;; esac
        case "$("$bb" stat -c %a "$w/$m")" in *[1357]|*[1357]?|*[1357]??) mode=755 ;; *) mode=644 ;; esac
        script=""
        case "$m" in
            "$data"/purelib/*) t="$site/${m#"$data"/purelib/}" ;;
            "$data"/platlib/*) t="$site/${m#"$data"/platlib/}" ;;
            "$data"/scripts/*) t="usr/local/bin/${m#"$data"/scripts/}"; mode=755; script=1 ;;
            "$data"/data/*) t="usr/local/${m#"$data"/data/}" ;;
            "$data"/headers/*) t="$include/$dist_name/${m#"$data"/headers/}" ;;
            "$data"/*) echo "request-pack nix builder: $2: unknown wheel data scheme in $m" >&2; exit 1 ;;
            *) t="$site/$m" ;;
        esac
        "$bb" mkdir -p "$stage/$("$bb" dirname "$t")"
        if [ -n "$script" ] && [ "$("$bb" head -c 8 "$w/$m")" = "#!python" ]; then
            { echo "#!/usr/bin/python3"; "$bb" tail -n +2 "$w/$m"; } > "$stage/$t"
        else
            "$bb" cp "$w/$m" "$stage/$t"
        fi
        "$bb" chmod "$mode" "$stage/$t"
        record_row "$t"
    done < "$TMPDIR/members"
    if [ -f "$w/$info/entry_points.txt" ]; then
        "$bb" awk -v OFS="$tab" '
            function trim(s) { gsub(/^[ \t\r]+|[ \t\r]+$/, "", s); return s }
            { line = trim($0) }
            line == "" || line ~ /^[#;]/ { next }
            line ~ /^\[/ { gsub(/^\[+|\]+$/, "", line); section = trim(line); next }
            section == "console_scripts" && index(line, "=") {
                name = trim(substr(line, 1, index(line, "=") - 1)); target = trim(substr(line, index(line, "=") + 1))
                module = target; fn = ""
                if (index(target, ":")) { module = substr(target, 1, index(target, ":") - 1); fn = substr(target, index(target, ":") + 1) }
                if (index(fn, "[")) fn = substr(fn, 1, index(fn, "[") - 1)
                print name, trim(module), trim(fn)
            }' "$w/$info/entry_points.txt" | LC_ALL=C "$bb" sort -t "$tab" -k1,1 -k2,2 -k3,3 > "$TMPDIR/scripts"
        while IFS="$tab" read -r name module func; do
            t="usr/local/bin/$name"
            "$bb" mkdir -p "$stage/usr/local/bin"
            printf '#!/usr/bin/python3\nimport sys\nfrom %s import %s\nif __name__ == "__main__":\n    sys.exit(%s())\n' \
                "$module" "${func%%.*}" "$func" > "$stage/$t"
            "$bb" chmod 755 "$stage/$t"
            record_row "$t"
        done < "$TMPDIR/scripts"
    fi
    "$bb" mkdir -p "$stage/$site/$info"
    printf 'request-pack\n' > "$stage/$site/$info/INSTALLER"
    record_row "$site/$info/INSTALLER"
    echo "${info}/RECORD,," >> "$rows"
    LC_ALL=C "$bb" sort -t, -k1,1 "$rows" > "$stage/$site/$info/RECORD"
    "$bb" chmod 644 "$stage/$site/$info/RECORD" "$stage/$site/$info/INSTALLER"
}

role=""; stage="$TMPDIR/stage"
while read -r kind a b c d; do
    case "$kind" in
        rootfs) witness_layer; role="$a"; epoch="$b"; witness_base "$c"; role="" ;;
        layer) witness_layer; role="$a"; epoch="$b"; "$bb" mkdir -p "$stage" ;;
        wheels)
            witness_layer; role="$a"; epoch="$b"; site="$c"; include="$d"; "$bb" mkdir -p "$stage"
            n=$(echo "$site" | "$bb" awk -F/ '{ print NF }'); up=""
            while [ "$n" -gt 2 ]; do up="../$up"; n=$((n - 1)); done ;;
        wheel) install_wheel "$a" "$b" ;;
        file)
            "$bb" mkdir -p "$stage/$("$bb" dirname "$c")"
            "$bb" cp "$b" "$stage/$c"
            "$bb" chmod "$("$bb" printf %o "$a")" "$stage/$c" ;;
    esac
done < "$gnuTarLayersPath"
witness_layer
[ "$checked" -gt 0 ] || { echo "request-pack nix builder: no layer was checked with GNU tar" >&2; exit 1; }
LC_ALL=C "$bb" sort -u "$witnessed" > "$witnessed.sorted"
if ! "$bb" cmp -s "$layer_digests" "$witnessed.sorted"; then
    echo "request-pack nix builder: layers of our manifests that GNU tar and pigz did not make: $("$bb" grep -vxF -f "$witnessed.sorted" "$layer_digests" | "$bb" tr '\n' ' ')" >&2
    exit 1
fi
echo "every layer witnessed: $("$bb" wc -l < "$layer_digests") distinct layer blobs, by GNU tar and pigz"

# 6. config, manifests and index from Nix's JSON, the blanks filled from the blobs themselves.
blobs="$out/blobs/sha256"
digests() { "$bb" grep -o 'sha256:[0-9a-f]\{64\}' "$1"; }  # in document order
ours_index=$(digests "$out/index.json" | "$bb" head -n 1)
set -- $(digests "$blobs/${ours_index#sha256:}")  # our manifests, in index order
ours_manifests="$*"
docs="$TMPDIR/docs"
"$bb" mkdir -p "$docs"
fill_index=""
while read -r kind i json; do
    case "$kind" in
        epoch) created=$("$bb" date -u -d "@$json" +%Y-%m-%dT%H:%M:%SZ) ;;
        config) config_tpl="$json" ;;
        manifest)
            set -- $ours_manifests; shift "$i"; ours_manifest="$1"
            set -- $(digests "$blobs/${ours_manifest#sha256:}"); ours_config="$1"; shift
            cfg_sed="s/@CREATED@/$created/g"; man_sed=""; j=0
            for layer in "$@"; do
                blob="$blobs/${layer#sha256:}"
                diff=$("$bb" zcat "$blob" | "$bb" sha256sum | "$bb" cut -d' ' -f1)
                cfg_sed="$cfg_sed;s/@DIFF_$j@/sha256:$diff/"
                man_sed="$man_sed;s/@LAYER_$j@/$layer/;s/\"@LAYER_${j}_SIZE@\"/$("$bb" stat -c %s "$blob")/"
                j=$((j + 1))
            done
            printf '%s' "$config_tpl" | "$bb" sed -e "$cfg_sed" > "$docs/config-$i"
            cfg=sha256:$("$bb" sha256sum "$docs/config-$i" | "$bb" cut -d' ' -f1)
            [ "$cfg" = "$ours_config" ] || { echo "request-pack nix builder: platform $i: Nix's image config is $cfg, ours $ours_config" >&2; exit 1; }
            printf '%s' "$json" | "$bb" sed -e "s/@CONFIG@/$cfg/;s/\"@CONFIG_SIZE@\"/$("$bb" stat -c %s "$docs/config-$i")/$man_sed" > "$docs/manifest-$i"
            man=sha256:$("$bb" sha256sum "$docs/manifest-$i" | "$bb" cut -d' ' -f1)
            [ "$man" = "$ours_manifest" ] || { echo "request-pack nix builder: platform $i: Nix's manifest is $man, ours $ours_manifest" >&2; exit 1; }
            fill_index="$fill_index;s/@MANIFEST_$i@/$man/;s/\"@MANIFEST_${i}_SIZE@\"/$("$bb" stat -c %s "$docs/manifest-$i")/" ;;
        index)
            printf '%s' "$json" | "$bb" sed -e "${fill_index#;}" > "$docs/index"
            idx=sha256:$("$bb" sha256sum "$docs/index" | "$bb" cut -d' ' -f1)
            [ "$idx" = "$ours_index" ] || { echo "request-pack nix builder: Nix's image index is $idx, ours $ours_index" >&2; exit 1; }
            echo "Nix's JSON agrees: index $idx" ;;
    esac
done < "$jsonDocsPath"
"$bb" rm -rf "$docs"
