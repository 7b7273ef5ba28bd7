-- wrk script for benches/registry/compare.sh: GET a manifest by tag, accepting the OCI and
-- Docker manifest and index types, as docker, containerd and skopeo do.
wrk.method = "GET"
wrk.headers["Accept"] = table.concat({
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")
