"""What the Python bench scripts share: free ports, a server process
waited for and stopped, pinning to a core, a process's CPU time and
RSS from /proc, and a WebSocket upgraded on a raw socket."""
import base64
import os
import shutil
import socket
import subprocess
import time


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, seconds=10):
    """Returns once 127.0.0.1:port accepts; raises when proc exits first
    or nothing listens within `seconds`."""
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("the server exited: %d" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the server did not listen on %d" % port)


def stop(proc, seconds=10):
    """SIGTERM, then SIGKILL when proc has not exited within `seconds`."""
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pin(core):
    """The taskset prefix that runs a command on `core`, when there is
    taskset and more than one core; else none."""
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and \
        (os.cpu_count() or 1) >= 2 else []


def cpu_seconds(pid):
    """The user and system CPU time pid has used, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    """pid's resident set size (VmRSS) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def ws_upgrade(port, path="/ws"):
    """A socket upgraded to a WebSocket at 127.0.0.1:port (RFC 6455
    §4.1), the 101's head read; raises when the server refuses."""
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return s
