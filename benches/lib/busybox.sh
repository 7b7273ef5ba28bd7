# Shared by the benchmark scripts: the base image they all build, since there is no registry
# to pull one from.

# Writes a build context in DIR: a root filesystem of busybox-static with its applet links,
# /etc/passwd, /etc/group and a sticky /tmp, and a Dockerfile that copies it FROM scratch.
busybox_context() {
  local ctx=$1
  mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/etc" "$ctx/rootfs/root" "$ctx/rootfs/tmp"
  chmod 1777 "$ctx/rootfs/tmp"
  cp "$(command -v busybox)" "$ctx/rootfs/bin/busybox"
  local applet
  for applet in $("$ctx/rootfs/bin/busybox" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$ctx/rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\n' >"$ctx/rootfs/etc/group"
  printf 'FROM scratch\nCOPY rootfs/ /\nCMD ["sh"]\n' >"$ctx/Dockerfile"
}
