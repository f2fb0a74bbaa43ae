"""Protocol core: codec round trips, envelopes, handshake, tamper / replay / session rejection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jointcredit.errors import (
    AuthenticationError,
    MalformedMessageError,
    RemotePartyError,
    ReplayError,
    SessionMismatchError,
    UnexpectedMessageError,
)
from jointcredit.protocol import codec
from jointcredit.protocol.channel import InProcessTransport, RecordingTransport, Transcript
from jointcredit.protocol.envelope import Envelope, Role
from jointcredit.protocol.session import BankEndpoint, CenterChannel


class Counter:
    """A tiny bank half: adds the request to a running total and answers with it."""

    protocol = "count"

    def __init__(self) -> None:
        self.total = 0

    def handle(self, msg_type: str, payload):
        if msg_type != "add":
            raise UnexpectedMessageError(f"count: unexpected {msg_type}")
        self.total += int(payload)
        return self.total


class Tap:
    """A transport that lets a test see and rewrite bytes on the wire."""

    def __init__(self, endpoint: BankEndpoint) -> None:
        self.endpoint = endpoint
        self.requests: list[bytes] = []
        self.rewrite = None

    def exchange(self, request: bytes) -> bytes:
        self.requests.append(request)
        if self.rewrite is not None:
            request = self.rewrite(request)
        return self.endpoint.receive(request)


def open_pair():
    endpoint = BankEndpoint()
    counter = Counter()
    endpoint.attach(counter)
    tap = Tap(endpoint)
    channel = CenterChannel(tap).open()
    return channel, endpoint, counter, tap


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**4096), max_value=2**4096)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@given(json_like)
def test_codec_round_trips_plain_data(value):
    decoded = codec.unpack(codec.pack(value))
    assert decoded == value


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int8", "uint16", "bool"])
def test_codec_round_trips_numpy_arrays(dtype):
    array = (np.arange(24).reshape(2, 3, 4) % 3).astype(dtype)
    decoded = codec.unpack(codec.pack({"a": array}))["a"]
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_codec_refuses_objects_it_cannot_encode_safely():
    with pytest.raises(TypeError):
        codec.pack(object())
    with pytest.raises(TypeError):
        codec.pack(np.array(["a", "b"], dtype=object))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x63", b"\x06\x05ab", codec.pack([1, 2]) + b"\x00", b"\x0a\x02f8\x01\x03\x01\x00"],
)
def test_codec_rejects_malformed_bytes(data):
    with pytest.raises(MalformedMessageError):
        codec.unpack(data)


def test_session_round_trips_and_counts():
    channel, endpoint, counter, tap = open_pair()
    assert channel.request("count", "add", 3) == 3
    assert channel.request("count", "add", 4) == 7
    assert counter.total == 7
    assert endpoint.session_id == channel.session_id


def test_tampered_payload_is_rejected_and_state_unchanged():
    channel, endpoint, counter, tap = open_pair()
    channel.request("count", "add", 1)

    def flip_last_payload_byte(raw: bytes) -> bytes:
        env = Envelope.from_bytes(raw)
        bad = Envelope(
            env.version, env.sender, env.seq, env.session_id, env.protocol, env.msg_type,
            codec.pack(1000), env.mac,
        )  # fmt: skip
        return bad.to_bytes()

    tap.rewrite = flip_last_payload_byte
    with pytest.raises(AuthenticationError):
        channel.request("count", "add", 5)
    assert counter.total == 1


def test_replayed_request_is_rejected_and_state_unchanged():
    channel, endpoint, counter, tap = open_pair()
    channel.request("count", "add", 2)
    replay = tap.requests[-1]
    with pytest.raises(ReplayError):
        endpoint.receive(replay)
    assert counter.total == 2


def test_out_of_order_request_is_rejected():
    channel, endpoint, counter, tap = open_pair()
    channel._seq += 1  # skip a sequence number, as a reordering network would
    with pytest.raises(ReplayError):
        channel.request("count", "add", 2)
    assert counter.total == 0


def test_message_from_another_session_is_rejected():
    channel_a, endpoint_a, counter_a, _ = open_pair()
    channel_b, endpoint_b, counter_b, tap_b = open_pair()
    channel_b.request("count", "add", 9)
    with pytest.raises(SessionMismatchError):
        endpoint_a.receive(tap_b.requests[-1])
    assert counter_a.total == 0


def test_wrong_sender_role_is_rejected():
    channel, endpoint, counter, tap = open_pair()
    channel.request("count", "add", 1)
    env = Envelope.from_bytes(tap.requests[-1])
    forged = Envelope(
        env.version, Role.BANK, env.seq + 1, env.session_id, env.protocol, env.msg_type,
        env.payload, env.mac,
    )  # fmt: skip
    with pytest.raises(SessionMismatchError):
        endpoint.receive(forged.to_bytes())


def test_reply_tampering_is_detected_by_the_center():
    endpoint = BankEndpoint()
    endpoint.attach(Counter())

    class CorruptReplies:
        def __init__(self) -> None:
            self.armed = False

        def exchange(self, request: bytes) -> bytes:
            reply = endpoint.receive(request)
            if self.armed:
                env = Envelope.from_bytes(reply)
                reply = Envelope(
                    env.version, env.sender, env.seq, env.session_id, env.protocol,
                    env.msg_type, codec.pack(-1), env.mac,
                ).to_bytes()  # fmt: skip
            return reply

    transport = CorruptReplies()
    channel = CenterChannel(transport).open()
    transport.armed = True
    with pytest.raises(AuthenticationError):
        channel.request("count", "add", 1)


def test_low_order_hello_key_is_rejected():
    endpoint = BankEndpoint()
    zero_point = bytes(32)
    from jointcredit.protocol.session import _HANDSHAKE_KEY

    hello = Envelope(1, Role.CENTER, 0, b"\x01" * 16, "session", "hello",
                     codec.pack({"public_key": zero_point})).sealed(_HANDSHAKE_KEY)  # fmt: skip
    with pytest.raises(AuthenticationError, match="low-order"):
        endpoint.receive(hello.to_bytes())


def test_bank_errors_travel_back_typed_and_the_session_continues():
    channel, endpoint, counter, tap = open_pair()
    with pytest.raises(RemotePartyError) as info:
        channel.request("count", "multiply", 2)
    assert info.value.remote_type == "UnexpectedMessageError"
    assert channel.request("count", "add", 1) == 1


def test_unknown_protocol_is_refused():
    channel, *_ = open_pair()
    with pytest.raises(RemotePartyError, match="no handler"):
        channel.request("nope", "x")


def test_malformed_envelope_is_rejected():
    endpoint = BankEndpoint()
    with pytest.raises(MalformedMessageError):
        endpoint.receive(b"not an envelope at all")


def test_transcript_counts_bytes_and_round_trips(tmp_path):
    endpoint = BankEndpoint()
    endpoint.attach(Counter())
    transcript = Transcript(keep_bytes=True)
    transport = RecordingTransport(InProcessTransport(endpoint.receive), transcript)
    channel = CenterChannel(transport).open()
    for i in range(3):
        channel.request("count", "add", i)
    summary = transcript.summary("count")
    assert summary["round_trips"] == 3 and summary["messages"] == 6
    assert transcript.round_trips == 4  # including the hello
    assert summary["bytes_center_to_bank"] == sum(
        e.n_bytes for e in transcript.entries if e.sender is Role.CENTER and e.protocol == "count"
    )
    assert [codec.unpack(p) for p in transcript.payloads(Role.BANK, "count")] == [0, 1, 3]


def test_bank_endpoint_survives_save_and_load(tmp_path):
    channel, endpoint, counter, tap = open_pair()
    channel.request("count", "add", 5)
    path = tmp_path / "bank.state"
    endpoint.save(path)
    restored = BankEndpoint.load(path)
    tap.endpoint = restored
    assert channel.request("count", "add", 1) == 6
