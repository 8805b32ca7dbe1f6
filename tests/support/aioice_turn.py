#!/usr/bin/env python3
"""A real third-party TURN client for the relay's tests: aioice's `turn` module.

Makes one TURN allocation (RFC 8656) over UDP or TCP with aioice's
`create_turn_endpoint`, sends `--count` datagrams of `--size` bytes to
`--peer` (a UDP echo such as `turnutils_peer`) every `--interval-ms`, waits
for the echoes, deletes the allocation (Refresh with LIFETIME 0) and prints
ONE JSON line on stdout:

  {"ok": true, "transport": "udp", "relayed_address": "127.0.0.1:50012",
   "mapped_address": "127.0.0.1:40211", "sent": 20, "received": 20,
   "lost": 0, "duplicates": 0, "deleted": true, "errors": [],
   "rtt_us": {"min": 61.2, "p50": 80.3, "p99": 130.9, "max": 140.0, "mean": 85.1}}

Exit status: 0 when every datagram came back and nothing failed; 1 when the
allocation failed, an error was reported, or datagrams were lost (the JSON
line is printed in every case, with the reasons in "errors"); 2 for bad
arguments.

Credentials: `--username/--password` for a static long-term user, or
`--rest-secret` (+ `--rest-user`, `--rest-ttl`) for TURN REST credentials:
username `<unix expiry>:<user>`, password base64(HMAC-SHA1(secret, username)),
the format coturn's `--use-auth-secret` and the gateway's `secret_env` take.

What aioice 0.13.0 does on the wire (so a server knows what to expect):
  * Allocate without credentials first, expects 401 with REALM and NONCE, then
    retries with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (HMAC-SHA1, key
    MD5(user:realm:pass)) + FINGERPRINT on every later request; 438 with a
    new NONCE is retried once. No MESSAGE-INTEGRITY-SHA256, no
    PASSWORD-ALGORITHMS, no SOFTWARE.
  * Allocate carries LIFETIME (600) and REQUESTED-TRANSPORT=UDP (also over a
    TCP control connection); the success response MUST have LIFETIME,
    XOR-MAPPED-ADDRESS and XOR-RELAYED-ADDRESS.
  * Authenticated responses are dropped (and the request retransmitted until
    it times out: 7 tries, RTO 0.5 s doubling, ~63 s) unless they carry a valid
    MESSAGE-INTEGRITY with the same key; a FINGERPRINT, when present, must be
    right or the message is dropped.
  * No CreatePermission: the first datagram to a peer sends ChannelBind
    (numbers from 0x4000 up) and everything is sent as ChannelData; Data
    indications are only accepted from an IP that has a channel.
  * Over TCP every message (ChannelData too) is padded to 4 bytes, and the
    reader expects the server to pad ChannelData as well.
  * Refresh at 5/6 of the granted lifetime; ChannelBind again after 500 s.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import struct
import sys
import time


def parse_addr(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return (host.strip("[]"), int(port))


def fmt_addr(addr):
    if not addr:
        return None
    return f"{addr[0]}:{addr[1]}"


def rest_credentials(secret, user, ttl):
    username = f"{int(time.time()) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    # Nearest rank: the smallest value with at least q of the samples at or below it.
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


class Echo(asyncio.DatagramProtocol):
    """Receives the peer's echoes through the TURN transport."""

    def __init__(self, peer):
        self.peer = peer
        self.sent_at = {}
        self.rtts_ns = []
        self.received = set()
        self.duplicates = 0
        self.foreign = 0
        self.errors = []
        self.all_back = asyncio.get_running_loop().create_future()
        self.expected = 0
        self.lost_conn = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        now = time.perf_counter_ns()
        if (addr[0], addr[1]) != self.peer or len(data) < 8:
            self.foreign += 1
            return
        (seq,) = struct.unpack_from("!Q", data)
        if seq in self.received:
            self.duplicates += 1
            return
        sent = self.sent_at.get(seq)
        if sent is None:
            self.foreign += 1
            return
        self.received.add(seq)
        self.rtts_ns.append(now - sent)
        if len(self.received) >= self.expected and not self.all_back.done():
            self.all_back.set_result(None)

    def error_received(self, exc):
        self.errors.append(f"{type(exc).__name__}: {exc}")

    def connection_lost(self, exc):
        if not self.lost_conn.done():
            self.lost_conn.set_result(exc)


async def run(args):
    from aioice import turn

    result = {
        "ok": False,
        "transport": args.transport,
        "relayed_address": None,
        "mapped_address": None,
        "sent": 0,
        "received": 0,
        "lost": 0,
        "duplicates": 0,
        "deleted": False,
        "errors": [],
        "rtt_us": None,
    }
    if args.rest_secret is not None:
        username, password = rest_credentials(args.rest_secret, args.rest_user, args.rest_ttl)
    else:
        username, password = args.username, args.password
    result["username"] = username

    try:
        transport, proto = await asyncio.wait_for(
            turn.create_turn_endpoint(
                lambda: Echo(args.peer),
                server_addr=args.server,
                username=username,
                password=password,
                lifetime=args.lifetime,
                transport=args.transport,
            ),
            timeout=args.timeout,
        )
    except Exception as exc:  # noqa: BLE001 - every failure goes into the JSON
        result["errors"].append(f"allocate: {type(exc).__name__}: {describe(exc)}")
        return result

    result["relayed_address"] = fmt_addr(transport.get_extra_info("sockname"))
    result["mapped_address"] = fmt_addr(transport.get_extra_info("related_address"))
    proto.expected = args.count

    payload_pad = b"\x5a" * max(0, args.size - 8)
    start = time.perf_counter()
    for seq in range(args.count):
        # Paced on the schedule, not on the previous send, so a slow send does
        # not stretch the whole run.
        due = start + seq * args.interval_ms / 1000.0
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        proto.sent_at[seq] = time.perf_counter_ns()
        transport.sendto(struct.pack("!Q", seq) + payload_pad, args.peer)
        result["sent"] += 1
        if seq == 0:
            # The first send binds a channel; wait for that one echo before
            # pacing the rest, so a failed ChannelBind is reported as such.
            try:
                await asyncio.wait_for(wait_for_count(proto, 1), timeout=args.timeout)
            except asyncio.TimeoutError:
                proto.errors.append("no echo for the first datagram (ChannelBind failed or no relay)")
                break
    if args.count > 0 and not proto.errors:
        try:
            await asyncio.wait_for(asyncio.shield(proto.all_back), timeout=args.timeout)
        except asyncio.TimeoutError:
            pass

    result["received"] = len(proto.received)
    result["duplicates"] = proto.duplicates
    result["lost"] = result["sent"] - result["received"]
    if proto.foreign:
        result["foreign"] = proto.foreign
    rtts = sorted(ns / 1000.0 for ns in proto.rtts_ns)
    if rtts:
        result["rtt_us"] = {
            "min": round(rtts[0], 1),
            "p50": round(percentile(rtts, 50), 1),
            "p99": round(percentile(rtts, 99), 1),
            "max": round(rtts[-1], 1),
            "mean": round(sum(rtts) / len(rtts), 1),
        }

    # Delete the allocation: Refresh with LIFETIME 0, then the transport closes.
    transport.close()
    try:
        await asyncio.wait_for(asyncio.shield(proto.lost_conn), timeout=args.timeout)
        result["deleted"] = True
    except asyncio.TimeoutError:
        proto.errors.append("the allocation was not deleted within the timeout")

    result["errors"].extend(proto.errors)
    if result["lost"]:
        result["errors"].append(f"{result['lost']} of {result['sent']} datagrams not echoed")
    result["ok"] = not result["errors"]
    return result


async def wait_for_count(proto, n):
    while len(proto.received) < n:
        await asyncio.sleep(0.001)


def describe(exc):
    # aioice's TransactionFailed carries the STUN error response.
    response = getattr(exc, "response", None)
    if response is not None:
        code = response.attributes.get("ERROR-CODE")
        if code:
            return f"STUN error {code[0]} {code[1]}"
    return str(exc) or repr(exc)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", type=parse_addr, required=True, help="TURN server host:port")
    p.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    p.add_argument("--peer", type=parse_addr, required=True, help="UDP echo peer host:port")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--rest-secret", help="TURN REST shared secret (instead of --username/--password)")
    p.add_argument("--rest-user", default="alice")
    p.add_argument("--rest-ttl", type=int, default=600)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--size", type=int, default=100, help="datagram size in bytes (>= 8)")
    p.add_argument("--interval-ms", type=float, default=10.0)
    p.add_argument("--lifetime", type=int, default=600)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds for each wait")
    args = p.parse_args()
    if args.rest_secret is None and (args.username is None or args.password is None):
        p.error("give --username and --password, or --rest-secret")
    if args.size < 8:
        p.error("--size must be at least 8 (the sequence number)")
    try:
        result = asyncio.run(run(args))
    except Exception as exc:  # noqa: BLE001
        result = {"ok": False, "transport": args.transport, "errors": [f"{type(exc).__name__}: {exc}"]}
    print(json.dumps(result), flush=True)
    sys.exit(0 if result.get("ok") else 1)


if __name__ == "__main__":
    main()
