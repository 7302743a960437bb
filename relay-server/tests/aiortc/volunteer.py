"""A volunteer's connection on aiortc, a third WebRTC stack, driven by tests/aiortc.rs.

aiortc names its one DTLS certificate under sha-256, sha-384 and sha-512 (RFC 8122) and
offers no loopback candidate. This script only carries bytes: it posts its offer to the
relay, prints the offer and answer as one JSON line, then sends the frames it reads as
hex on stdin and prints each message it receives as hex, one a line. The test does the
protocol (binding, hello, proof) with the project's own crates.
"""

import asyncio
import json
import sys
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription


def post_offer(url, sdp):
    body = json.dumps({"sdp": sdp}).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.load(response)["sdp"]


async def main(url):
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection()
    channel = pc.createDataChannel("starling")
    opened = asyncio.Event()
    channel.on("open", opened.set)

    @channel.on("message")
    def on_message(message):
        print(bytes(message).hex(), flush=True)

    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    answer = await loop.run_in_executor(None, post_offer, url, offer)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    print(json.dumps({"offer": offer, "answer": answer}), flush=True)
    await asyncio.wait_for(opened.wait(), 15)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        for frame in line.split():
            channel.send(bytes.fromhex(frame))
    await pc.close()


asyncio.run(main(sys.argv[1]))
