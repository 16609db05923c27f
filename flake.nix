{
  description = "request-pack: pinned, offline Nix builds of the benchmark artifacts' OCI images";

  # No inputs: a Nix 2.8 flake fetches every input before it evaluates any
  # output, and nixpkgs (github.com) is not reachable where these images are
  # built. The self-contained images need no nixpkgs at all; the nixpkgs form
  # fetches the pin below only when one of its outputs is asked for.
  outputs = { self }:
    let
      system = "x86_64-linux";
      nixpkgsPin = {
        rev = "50ab793786d9de88ee30ec4e4c24fb4236fc2674";
        narHash = "sha256-/bVBlRpECLVzjV19t5KMdMFWSwKLtb5RyXdjz3LJT+g=";
      };
      # Every nix/<name>/default.nix written by `request-pack nix` is an artifact.
      entries = builtins.readDir ./nix;
      artifacts = builtins.filter
        (n: entries.${n} == "directory" && builtins.pathExists (./nix + "/${n}/default.nix"))
        (builtins.attrNames entries);
      forAll = f: builtins.listToAttrs (map (n: { name = n; value = f n; }) artifacts);
      pkgs = import ./nix/nixpkgs.nix { inherit system; inherit (nixpkgsPin) rev narHash; };
    in
    {
      # nix build .#<name>: the self-contained OCI layout, built offline in the sandbox.
      packages.${system} = forAll (n: import (./nix + "/${n}") { });

      # nix build .#nixpkgsImages.x86_64-linux.<name>.linux_amd64: dockerTools form
      # (needs nixpkgs; not a standard output, so `nix flake check` does not fetch it).
      nixpkgsImages.${system} = forAll (n: import (./nix + "/${n}/dockertools.nix") { inherit pkgs; });

      lib = { inherit nixpkgsPin; };
    };
}
