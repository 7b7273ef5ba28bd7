# The image of Dockerfile, written without RUN --network.
FROM berth-conformance/busybox:latest
RUN echo lo > /net-none.txt
RUN echo default > /net-default.txt
CMD ["cat", "/net-none.txt", "/net-default.txt"]
