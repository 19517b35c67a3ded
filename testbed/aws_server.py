"""The aws CLI, warm: what the end-to-end tests run for their own fixtures and assertions.

    aws_server.py SOCKET

Each `aws …` costs about 0.6 s of CPU to start (importing botocore and awscli, parsing service
models), and a suite run makes a few hundred of them while its tests run side by side on two
cores. This process imports the CLI and loads the models once; each request forks it, and the
child runs the same CLI (`awscli.clidriver`) with the request's arguments and environment, as a
fresh `aws` process would, then answers its exit code, stdout and stderr.

Protocol: one request per connection. The client sends a JSON object {"args": [...], "env":
{...}} and shuts down its write side; the server answers a JSON object {"code": N, "stdout":
"...", "stderr": "..."} and closes. The simulated instances do not use this: their scripts run the
real `aws` command, as on EC2.
"""

import contextlib
import json
import os
import signal
import socket
import sys
import tempfile

from awscli.clidriver import create_clidriver

SERVICES = ("ec2", "ssm", "ecr", "elbv2", "secretsmanager", "cloudwatch")


def serve_one(conn, driver):
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    request = json.loads(data)
    for key, value in request.get("env", {}).items():
        os.environ[key] = value
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            code = driver.main(request["args"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # the answer must come back whatever happened
            print(f"aws_server: {type(e).__name__}: {e}", file=sys.stderr)
            code = 255
        sys.stdout.flush()
        sys.stderr.flush()
        out.seek(0)
        err.seek(0)
        answer = {"code": code, "stdout": out.read().decode("utf-8", "replace"),
                  "stderr": err.read().decode("utf-8", "replace")}
    conn.sendall(json.dumps(answer).encode())


def main():
    path = sys.argv[1]
    driver = create_clidriver()
    for service in SERVICES:
        driver.session.get_service_model(service)
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            try:
                serve_one(conn, driver)
            finally:
                os._exit(0)
        conn.close()


if __name__ == "__main__":
    main()
