# nixpkgs, pinned by rev and narHash (NixOS 24.11 branch, 2025-06-30), for the
# nixpkgs form of the images only (nix/<name>/dockertools.nix). The
# self-contained images (nix/<name>/default.nix) never import this file, so
# evaluating and building them never fetches nixpkgs. flake.nix states the same
# pin; tests/unit/test_nix.py checks that the two agree.
#
# Not a flake input on purpose: Nix 2.8 fetches every input of a flake before
# evaluating any output, and github.com is not reachable where the images are
# built and checked.
{ system ? "x86_64-linux"
, rev ? "50ab793786d9de88ee30ec4e4c24fb4236fc2674"
, narHash ? "sha256-/bVBlRpECLVzjV19t5KMdMFWSwKLtb5RyXdjz3LJT+g="
}:
import (builtins.fetchTarball {
  url = "https://github.com/NixOS/nixpkgs/archive/${rev}.tar.gz";
  sha256 = narHash;
}) { inherit system; config = { }; overlays = [ ]; }
