"""A small MJPEG-over-HTTP camera on 127.0.0.1, serving frames of a video file.

Run as ``python tests/mjpeg_server.py VIDEO PORT [--frozen]``; tests start and kill
it to make a network source fail and come back for real. ``--frozen`` sends the
video's first frame over and over, as a stuck encoder does.
"""

from __future__ import annotations

import http.server
import sys
import time

import cv2


def main() -> None:
    video, port = sys.argv[1], int(sys.argv[2])
    frozen = "--frozen" in sys.argv[3:]
    cap = cv2.VideoCapture(video)
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", image)[1].tobytes())

    class Camera(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            i = 0
            try:
                while True:
                    jpg = frames[0 if frozen else i % len(frames)]
                    i += 1
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                     b"Content-Length: %d\r\n\r\n" % len(jpg) + jpg + b"\r\n")
                    time.sleep(1 / 15)
            except (BrokenPipeError, ConnectionResetError):
                return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Camera)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
