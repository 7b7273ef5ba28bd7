# The image of Dockerfile, written without --link, which changes how the layers are made but
# not the image they make here.
FROM berth-conformance/busybox:latest
RUN mkdir -p /app && echo base > /app/existing.txt
COPY a.txt /app/
COPY --chown=app:staff --chmod=0640 b.txt /app/owned.txt
ADD archive.tar /app/extracted/
COPY dir/ /linked-dir/
CMD ["cat", "/app/existing.txt", "/app/a.txt", "/app/owned.txt"]
