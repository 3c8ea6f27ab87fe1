#!/usr/bin/env python3
"""A name server that answers every query for NAME with ADDRESS, after a burst of answers a
resolver must drop: another ID, another question, no QR bit, truncated bytes, a compression
loop, a record longer than the datagram. (An answer with the right ID and question is the
name server's word: one for another name would be a valid "no such record".)

  hostile_dns.py PORT NAME ADDRESS
"""
import socket, struct, sys
from orphan import exit_when_orphaned

exit_when_orphaned()
port, name, address = int(sys.argv[1]), sys.argv[2].lower(), sys.argv[3]


def qname(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"


def answer(qid, flags, question, records):
    return struct.pack(">HHHHHH", qid, flags, 1, len(records), 0, 0) + question + b"".join(records)


def a_record(ip, owner=b"\xc0\x0c"):
    return owner + struct.pack(">HHIH", 1, 1, 0, 4) + socket.inet_aton(ip)


s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
while True:
    data, peer = s.recvfrom(4096)
    if len(data) < 12:
        continue
    qid = struct.unpack(">H", data[:2])[0]
    end = data.index(b"\0", 12) + 5
    question = data[12:end]
    qtype = struct.unpack(">H", question[-4:-2])[0]
    if question[:-4] != qname(name) or qtype != 1:
        s.sendto(answer(qid, 0x8180, question, []), peer)   # NOERROR, no record (AAAA)
        continue
    bogus = [
        answer(qid ^ 0x5555, 0x8180, question, [a_record("10.9.9.1")]),
        answer(qid, 0x8180, qname("evil.test") + question[-4:], [a_record("10.9.9.2")]),
        answer(qid, 0x0180, question, [a_record("10.9.9.3")]),
        answer(qid, 0x8180, question, [a_record("10.9.9.4")])[:-3],
        answer(qid, 0x8180, question, [b"\xc0\x2a\xc0\x28" + struct.pack(">HHIH", 1, 1, 0, 4) + socket.inet_aton("10.9.9.5")]),
        answer(qid, 0x8180, question, [b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 400) + socket.inet_aton("10.9.9.6")]),
        answer(qid, 0x8180, question, [a_record("10.9.9.7")])[:13],
    ]
    for b in bogus:
        s.sendto(b, peer)
    s.sendto(answer(qid, 0x8180, question, [a_record(address)]), peer)
