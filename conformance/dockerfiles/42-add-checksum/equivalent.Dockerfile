# The image of Dockerfile, written without --checksum (the download matches it).
FROM berth-conformance/busybox:latest
ARG SERVER
ADD ${SERVER}/file.txt /verified/file.txt
CMD ["cat", "/verified/file.txt"]
