"""POST bodies to a moonsocket server with Python's http.client: one
with Content-Length, one chunked (encode_chunked), then a request on the
same connection.  Prints what came back."""
import http.client
import os
import sys

port = int(sys.argv[1])
body = os.urandom(100000)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

conn.request("POST", "/echo", body=body)
resp = conn.getresponse()
data = resp.read()
print("length", resp.status, len(data) if data == body else "mismatch")

def pieces():
    for i in range(0, len(body), 7000):
        yield body[i:i + 7000]

conn.request("POST", "/echo", body=pieces(), encode_chunked=True,
             headers={"Transfer-Encoding": "chunked"})
resp = conn.getresponse()
data = resp.read()
print("chunked", resp.status, len(data) if data == body else "mismatch")

conn.request("GET", "/fast")
resp = conn.getresponse()
print("keep-alive", resp.status, resp.read().decode().strip())
conn.close()
