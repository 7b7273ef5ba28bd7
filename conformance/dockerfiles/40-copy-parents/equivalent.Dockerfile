# The image of Dockerfile, written without --parents: the files are gathered with their parent
# directories in a stage, then copied in one step for each of Dockerfile's.
FROM berth-conformance/busybox:latest AS parents
COPY src/a/one.txt /out/src/a/
COPY src/b/two.txt /out/src/b/
COPY src/b/deep /keep/src/b/deep/

FROM berth-conformance/busybox:latest
COPY --from=parents /out/ /out/
COPY --from=parents /keep/ /keep/
CMD ["sh", "-c", "find /out /keep | sort"]
