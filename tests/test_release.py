"""Update packages (pilectl.release) and the host's plan for one pile (pilectl.transfer),
without a pile: the hash chain, the frame every chunk makes, the signature the firmware
checks, and what the planner sends for each answer a pile can give."""

import hashlib

import cbor2
import pytest
from pile.surface import (
    UPDATE_IDLE,
    UPDATE_REBOOTING,
    UPDATE_RECEIVING,
    UPDATE_REFUSED,
    UPDATE_TRIAL,
    UPDATE_VERIFYING,
)
from pilectl import cose, release, transfer, wire

NOISE = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(64))  # packs badly
FILES = {"pile/a.mpy": NOISE, "pile/b.mpy": b"b" * 1000, "profiles/x.json": b"{}"}


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    path = tmp_path_factory.mktemp("release") / "maker.pem"
    return release.keygen(path), release.load_private(path)


@pytest.fixture
def package(key):
    return release.make(FILES, "1.2.0", "armv6m", 6 | 3 << 8, key[1])


def test_each_chunk_with_its_link_hashes_to_the_link_before_it(package):
    link = package.fields["h0"]
    for offset in range(0, package.size, package.chunk):
        data, following = package.chunk_at(offset)
        assert hashlib.sha256(data + following).digest() == link
        link = following
    assert link == bytes(32)


def test_the_files_come_back_out_of_the_stream_unpacked(package):
    import zlib

    at = package.fields["table"]
    for path, size, digest, carried in package.files():
        data = zlib.decompress(package.stream[at:at + carried], -package.fields["z"])
        assert len(data) == size and hashlib.sha256(data).digest() == digest
        assert data == FILES[path]
        at += carried
    assert at == package.size


def test_the_head_is_signed_so_the_firmware_verifies_it_and_nothing_else(key, package):
    from pile.signature import verify

    public = bytes.fromhex(key[0])
    assert verify(public, package.head, package.signature)
    assert not verify(public, package.head + b"\x00", package.signature)


def test_the_largest_chunk_request_fits_one_frame_signed(package):
    _, link = package.chunk_at(0)
    fields = {wire.TYPE: wire.UPDATE_CHUNK, wire.SEQ: 2 ** 64 - 1,
              wire.CHUNK_OFFSET: 2 ** 32 - 1, wire.CHUNK_DATA: bytes(release.CHUNK),
              wire.CHUNK_LINK: link}
    signed = cose.sign(bytes(32), wire.encode(fields), bytes(8), kid=bytes(4))
    wire.frame(signed)  # raises past the frame's 512 bytes
    assert len(signed) + 2 <= wire.MAX_FRAME


def status(state, held=0, package=None, running="1.0.0", rollback=None, detail=None):
    return {2: state, 3: held, 6: running, 8: rollback, 9: detail,
            10: package.id if package else None}


def test_the_plan_offers_sends_from_the_piles_offset_commits_and_waits(package):
    plan = transfer.Transfer(package)
    step = plan.next(status(UPDATE_IDLE))
    assert step.mtype == wire.UPDATE_OFFER and step.fields[wire.OFFER_HEAD] == package.head
    assert plan.next(status(UPDATE_VERIFYING, package=package)) == transfer.WAIT
    step = plan.next(status(UPDATE_RECEIVING, 2 * package.chunk, package))
    assert step.mtype == wire.UPDATE_CHUNK
    assert step.fields[wire.CHUNK_OFFSET] == 2 * package.chunk
    step = plan.next(status(UPDATE_RECEIVING, package.size, package))
    assert step.mtype == wire.UPDATE_COMMIT and step.fields[wire.COMMIT_PACKAGE] == package.id
    assert plan.next(status(UPDATE_REBOOTING, package=package)) == transfer.REBOOT
    assert plan.next(status(UPDATE_TRIAL, running="1.2.0")) == transfer.WAIT
    assert plan.next(status(UPDATE_IDLE, running="1.2.0")) == transfer.DONE


def test_the_plan_reports_a_refusal_and_a_rollback_in_the_piles_words(package):
    plan = transfer.Transfer(package)
    plan.next(status(UPDATE_IDLE))
    with pytest.raises(transfer.UpdateFailed, match="not signed"):
        plan.next(status(UPDATE_REFUSED, detail="the package is not signed by this pile's "
                                                "release key"))
    plan = transfer.Transfer(package)
    old = ["1.2.0", "an earlier try", 1]
    plan.next(status(UPDATE_IDLE, rollback=old))  # a rollback from before: not ours
    with pytest.raises(transfer.UpdateFailed, match="rolled back to 1.0.0: it hung") as failed:
        plan.next(status(UPDATE_IDLE, rollback=["1.2.0", "it hung", 2]))
    assert failed.value.rolled_back


def test_a_pile_on_trial_with_another_version_is_said_at_once(package):
    with pytest.raises(transfer.UpdateFailed, match="on trial with firmware 1.1.0"):
        transfer.Transfer(package).next(status(UPDATE_TRIAL, running="1.1.0"))


def test_a_package_file_that_is_not_one_is_named(tmp_path):
    path = tmp_path / "x.pkg"
    path.write_bytes(cbor2.dumps({"head": 1}))
    with pytest.raises(release.ReleaseError, match="not an update package"):
        release.Package.load(path)


def test_the_hosts_inflater_reads_a_packed_file_back_in_slices():
    import io

    data = NOISE + b"b" * 5000 + NOISE
    reader = release.Inflater(io.BytesIO(release.pack(data, release.WINDOW)), release.WINDOW)
    out = b""
    while piece := reader.read(512):
        assert len(piece) <= 512
        out += piece
    assert out == data
