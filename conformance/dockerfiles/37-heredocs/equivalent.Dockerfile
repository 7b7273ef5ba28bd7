# The image of Dockerfile, written without heredocs: one step for each of its steps.
FROM berth-conformance/busybox:latest
ENV GREETING=hello
RUN echo "heredoc line one" > /heredoc.txt && echo "heredoc line two" >> /heredoc.txt
RUN echo "leading tabs stripped" > /dashed.txt
RUN echo 'no expansion: $GREETING' > /quoted.txt
RUN echo "run by its shebang" > /shebang.txt
RUN echo "expanded by the shell: $GREETING" > /cat-heredoc.txt
COPY heredoc/copied-heredoc.txt /copied-heredoc.txt
COPY heredoc/A heredoc/B /multi/
CMD ["sh", "-c", "cat /heredoc.txt /dashed.txt /quoted.txt /shebang.txt /cat-heredoc.txt /copied-heredoc.txt /multi/A /multi/B"]
