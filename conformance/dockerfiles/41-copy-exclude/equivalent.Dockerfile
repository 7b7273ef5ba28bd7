# The image of Dockerfile, written without --exclude: the files that remain are gathered in a
# stage, then copied in one step for each of Dockerfile's.
FROM berth-conformance/busybox:latest AS picked
COPY app/main.txt /app/
COPY app/sub/keep.txt /app/sub/
COPY app/main.txt app/notes.md app/debug.log /added/

FROM berth-conformance/busybox:latest
COPY --from=picked /app/ /app/
COPY --from=picked /added/ /added/
CMD ["sh", "-c", "find /app /added | sort"]
