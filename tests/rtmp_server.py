"""A real nginx with its RTMP module on 127.0.0.1 for the CDN-push tests:
a generated configuration in a temporary folder (a free port, its own pid,
log and temporary paths), recording every stream as FLV and writing HLS.

``RtmpServer(folder).start()`` waits until nginx listens; ``stop()`` ends
it.  ``find_nginx()`` is None where nginx or the module is not installed.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

#: Where Debian's libnginx-mod-rtmp puts the module.
MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")

CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
load_module {module};
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record all;
            record_path {root}/record;
            record_unique off;
            hls on;
            hls_path {root}/hls;
            hls_fragment 1s;
            hls_playlist_length 600s;
            hls_cleanup off;
        }}
    }}
}}
"""


def find_nginx():
    """The nginx binary, if it and the RTMP module are installed; else None."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                       else None)
    return binary if binary and MODULE.exists() else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtmpServer:
    """nginx-rtmp serving ``rtmp://127.0.0.1:<port>/live/<name>`` from ``root``."""

    def __init__(self, root):
        self.root = Path(root)
        self.port = None
        self.process = None

    def url(self, name):
        return f"rtmp://127.0.0.1:{self.port}/live/{name}"

    def recording(self, name):
        return self.root / "record" / f"{name}.flv"

    def playlist(self, name):
        return self.root / "hls" / f"{name}.m3u8"

    def start(self, timeout=10.0, port=None):
        """Start nginx (on ``port``, or a free one) and wait until it listens."""
        binary = find_nginx()
        if binary is None:
            raise RuntimeError("nginx with the RTMP module is not installed "
                               "(apt-get install nginx libnginx-mod-rtmp)")
        for sub in ("record", "hls", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o777)
        for sub in ("record", "hls", "logs"):
            os.chmod(self.root / sub, 0o777)
        self.port = port or free_port()
        conf = self.root / "nginx.conf"
        conf.write_text(CONFIG.format(root=self.root, module=MODULE, port=self.port))
        self.process = subprocess.Popen(
            [binary, "-p", str(self.root), "-c", str(conf), "-e", str(self.root / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace")
                raise RuntimeError(f"nginx exited with {self.process.returncode}: {err}"
                                   f"{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on 127.0.0.1:{self.port} within {timeout} s")

    def stop(self, timeout=5.0):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)       # graceful: finish the recordings
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def log(self):
        path = self.root / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""
