"""A pile maker's release key, and signed update packages (docs/field-update.md).

`keygen` makes the key pair: the private key (PEM) stays with the maker, the public key
(hex) goes into each board file (`update.release_key`). `build` compiles a firmware
tree for one architecture and makes a package of it: a head, signed with the private
key, and a stream (the file table, then every file). `Package.load` reads one back and
gives the chunks a pile takes, each with its link of the hash chain.

The signature is the scheme the pile verifies (pile.signature, through pile.surface),
made here with `cryptography`.
"""

import hashlib
import re
import shutil
import tempfile
import zlib
from pathlib import Path

import cbor2
from pile.surface import BOOT_STAGE_VERSION, SIGNATURE_SCHEME

from pilectl import build

FORMAT = 1  # of a package file
CHUNK = 416  # stream bytes an UPDATE_CHUNK carries: signed, with its link, 501 of 512 bytes
LINK = 32  # bytes of a hash-chain link (SHA-256)
WINDOW = 10  # files packed with raw deflate in a 1 KB window: the pile inflates in 1 KB
_VERSION_LINE = re.compile(r'^VERSION = "([^"]*)"$', re.M)


class ReleaseError(Exception):
    """A package or key that cannot be made or used; the text says what to do."""


# -- keys -------------------------------------------------------------------------------

def keygen(private_path):
    """Write a new private key (PEM, owner-only) to `private_path` and the public key's
    hex to `private_path`.pub; return the hex."""
    from cryptography.hazmat.primitives import serialization

    private_path = Path(private_path)
    if private_path.exists():
        raise ReleaseError(f"{private_path} exists: a release key is never overwritten "
                           "(piles in the field trust it); choose another file")
    key = _generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600)
    private_path.write_bytes(pem)
    public = public_hex(key)
    Path(f"{private_path}.pub").write_text(public + "\n")
    return public


def load_private(path):
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ReleaseError(f"cannot read the release key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise ReleaseError(f"{path} is not a release key (PEM) made by pilectl release "
                           "keygen") from None
    if not isinstance(key, _private_class()):
        raise ReleaseError(f"{path} is not a {SIGNATURE_SCHEME} key, the scheme piles "
                           "verify")
    return key


def public_hex(private):
    return _public_bytes(private.public_key()).hex()


def _private_class():
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    return ed25519.Ed25519PrivateKey if SIGNATURE_SCHEME == "ed25519" else \
        ec.EllipticCurvePrivateKey


def _generate():
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if SIGNATURE_SCHEME == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _public_bytes(public):
    from cryptography.hazmat.primitives import serialization

    if SIGNATURE_SCHEME == "ed25519":
        return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    numbers = public.public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def sign(private, data):
    """The signature over `data` as the pile reads it (raw, fixed length)."""
    if SIGNATURE_SCHEME == "ed25519":
        return private.sign(data)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# -- packages ---------------------------------------------------------------------------

class Package:
    """A package read from its file: `head` (bytes) and `fields` (decoded), `signature`,
    `stream`; `id` is what UPDATE_COMMIT names (sha256 of the head)."""

    def __init__(self, head, signature, stream):
        self.head = head
        self.signature = signature
        self.stream = stream
        self.fields = cbor2.loads(head)
        self.id = hashlib.sha256(head).digest()
        self.version = self.fields["v"]
        self.size = self.fields["size"]
        self.chunk = self.fields["chunk"]
        self._links = chain(stream, self.chunk)

    @classmethod
    def load(cls, path):
        try:
            return cls.loads(Path(path).read_bytes())
        except OSError as exc:
            raise ReleaseError(f"cannot read the package {path}: {exc.strerror}") from None
        except ValueError:
            raise ReleaseError(f"{path} is not an update package (make one with pilectl "
                               "release build)") from None

    def save(self, path):
        Path(path).write_bytes(cbor2.dumps({"format": FORMAT, "head": self.head,
                                            "signature": self.signature,
                                            "stream": self.stream}))

    def chunk_at(self, offset):
        """(bytes, next link) of the chunk that starts at stream byte `offset`."""
        index = offset // self.chunk
        return self.stream[offset:offset + self.chunk], self._links[index + 1]

    def files(self):
        """[[path, size, sha256]] of the package's files (and the bytes the stream
        carries of each, when packed)."""
        return cbor2.loads(self.stream[:self.fields["table"]])

    @classmethod
    def loads(cls, data):
        """A package from a package file's bytes; ValueError when it is not one."""
        try:
            found = cbor2.loads(data)
            return cls(found["head"], found["signature"], found["stream"])
        except (KeyError, TypeError, cbor2.CBORDecodeError) as exc:
            raise ValueError(f"not an update package: {exc}") from None

    def describe(self):
        fields = self.fields
        return {"version": self.version, "arch": fields.get("arch"),
                "mpy": f"{fields['mpy'] & 0xFF}.{fields['mpy'] >> 8 & 3}",
                "boot_stage": fields["boot"], "bytes": self.size, "packed": bool(fields.get("z")),
                "files": len(self.files()), "id": self.id.hex()}


class Inflater:
    """A packed file's bytes read from `stream` (raw deflate, 2**`window` window): what
    MicroPython's deflate.DeflateIO does on a pile, for the firmware's Updater on a host
    (the pile emulator)."""

    def __init__(self, stream, window):
        self._stream = stream
        self._inflate = zlib.decompressobj(-window)

    def read(self, size):
        out = b""
        while len(out) < size and not self._inflate.eof:
            data = self._inflate.unconsumed_tail or self._stream.read(size)
            if not data:
                break
            out += self._inflate.decompress(data, size - len(out))
        return out


def chain(stream, chunk):
    """The hash chain's links: link i = sha256(chunk i ‖ link i+1), the last all zeros;
    link 0 goes into the signed head."""
    count = -(-len(stream) // chunk)
    links = [bytes(LINK)] * (count + 1)
    for index in range(count - 1, -1, -1):
        piece = stream[index * chunk:(index + 1) * chunk]
        links[index] = hashlib.sha256(piece + links[index + 1]).digest()
    return links


def make(files, version, arch, mpy, private, chunk=CHUNK, boot=BOOT_STAGE_VERSION,
         window=WINDOW):
    """A signed Package of `files` ({path in the slot: bytes}) for firmware `version`,
    built for `arch` (an mpy-cross -march name, or None) and .mpy `mpy` (version | sub << 8);
    each file packed with raw deflate in a 2**`window`-byte window (0: stored as it is)."""
    named = sorted(files.items())
    carried = [pack(data, window) for _, data in named]
    entries = [[path, len(data), hashlib.sha256(data).digest()] for path, data in named]
    if window:
        entries = [entry + [len(packed)] for entry, packed in zip(entries, carried,
                                                                  strict=True)]
    table = cbor2.dumps(entries)
    stream = table + b"".join(carried)
    fields = {"v": version, "arch": arch, "mpy": mpy, "boot": boot, "size": len(stream),
              "chunk": chunk, "table": len(table), "h0": chain(stream, chunk)[0]}
    if window:
        fields["z"] = window
    head = cbor2.dumps(fields, canonical=True)
    return Package(head, sign(private, head), stream)


def pack(data, window):
    """`data` as raw deflate in a 2**`window`-byte window, the pile's inflate buffer; as
    it is when `window` is 0."""
    if not window:
        return data
    packer = zlib.compressobj(9, zlib.DEFLATED, -window)
    return packer.compress(data) + packer.flush()


def firmware_files(source=None, version=None, march="local"):
    """{path: bytes} of a firmware tree (`source`, by default the one pilectl came with)
    as a slot holds it: pile/ compiled for `march`, and the profiles. `version` stamps
    pile/__init__.py's VERSION (the version the firmware reports) before compiling."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "src"
        shutil.copytree(Path(source) if source else build.FIRMWARE, tree,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        init = tree / "pile" / "__init__.py"
        text = init.read_text()
        found = _VERSION_LINE.search(text)
        if found is None:
            raise ReleaseError(f"{init} has no VERSION line")
        if version is not None:
            text = _VERSION_LINE.sub(f'VERSION = "{version}"', text, count=1)
            init.write_text(text)
        out = Path(tmp) / "out"
        try:
            written = build.build(out, tree, march)
        except build.BuildError as exc:
            raise ReleaseError(str(exc)) from None
        kept = {}
        for path in written:
            relative = path.relative_to(out).as_posix()
            if relative.startswith(("pile/", "profiles/")):
                kept[relative] = path.read_bytes()
        return kept, version or found[1]
