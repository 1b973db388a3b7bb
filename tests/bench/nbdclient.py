"""A minimal NBD client (fixed newstyle, NBD_OPT_GO, simple replies) for
benchmarks that must write a few scattered blocks without touching the rest."""
import socket
import struct

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
OPT_GO = 7
REQ_MAGIC = 0x25609513
SIMPLE_REPLY = 0x67446698


def _recv(sock, n):
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("NBD server closed the connection")
        buf += part
    return bytes(buf)


class NbdClient:
    def __init__(self, hostport, export):
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        magic, opt, _flags = struct.unpack(">QQH", _recv(self.sock, 18))
        assert magic == NBDMAGIC and opt == IHAVEOPT, "not an NBD server"
        self.sock.sendall(struct.pack(">I", 3))
        name = export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
        self.size = None
        while True:
            magic, _opt, rtype, length = struct.unpack(">QIII", _recv(self.sock, 20))
            assert magic == REPLY_MAGIC
            payload = _recv(self.sock, length)
            if rtype == 1:  # ACK
                break
            if rtype & 0x80000000:
                raise ConnectionError(f"export {export} refused: {rtype:#x} {payload!r}")
            if rtype == 3 and struct.unpack(">H", payload[:2])[0] == 0:
                self.size = struct.unpack(">Q", payload[2:10])[0]
        self.cookie = 0

    def _request(self, cmd, offset, length, payload=b""):
        self.cookie += 1
        self.sock.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, cmd, self.cookie, offset, length) + payload)
        magic, err, cookie = struct.unpack(">IIQ", _recv(self.sock, 16))
        assert magic == SIMPLE_REPLY and cookie == self.cookie
        if err:
            raise OSError(err, f"NBD command {cmd} failed")

    def write(self, offset, data):
        self._request(1, offset, len(data), data)

    def read(self, offset, length):
        self.cookie += 1
        self.sock.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, 0, self.cookie, offset, length))
        magic, err, cookie = struct.unpack(">IIQ", _recv(self.sock, 16))
        assert magic == SIMPLE_REPLY and cookie == self.cookie
        if err:
            raise OSError(err, "NBD read failed")
        return _recv(self.sock, length)

    def flush(self):
        self._request(3, 0, 0)

    def close(self):
        try:
            self.sock.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, 2, 0, 0, 0))
        finally:
            self.sock.close()
