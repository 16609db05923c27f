"""The type URIs of what request-pack attests, owned by the project and versioned.

One home for them because two links of the chain write them: ``image.provenance``
(the SLSA buildType and builder id) and ``bundle`` (the result predicate), and
neither may import the other. ``docs/attestations.md`` says what each names and
how they are versioned: a URI never changes meaning; an incompatible change of
its document gets a new ``/vN``.
"""

from __future__ import annotations

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"

RESULT_PREDICATE_TYPE = "https://request-pack.org/attestation/result/v1"
# Bundles signed before the project owned its URIs carry this; their signatures cover it, so it stays readable.
LEGACY_RESULT_PREDICATE_TYPES = ("https://request-pack.invalid/result/v1",)

# `reproduce --sign`: a bundle's image rebuilt from its archive of inputs, with both index digests
REPRODUCED_PREDICATE_TYPE = "https://request-pack.org/attestation/reproduced/v1"

BUILD_TYPE = "https://request-pack.org/buildtypes/oci-layout/v1"
BUILDER_ID = "https://request-pack.org/builder/request-pack"  # the version goes in builder.version

SPDX_NAMESPACE = "https://request-pack.org/spdx"
