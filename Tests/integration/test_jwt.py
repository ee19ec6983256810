"""jwt.verify: signatures (HMAC, RSA, ECDSA) made here with Python's hmac and the openssl command,
checked by the gateway; the registered claims; and every refusal with its reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time

import pytest

from wsgate_support import connect, recv_json, run

# Verifies the token and options of each message and answers {claims=..., reason=...}.
VERIFY = """
if websocketInfo.type ~= "data" then return end
local request = from_json(websocketInfo.message)
local claims, reason = jwt.verify(request.token, request.options)
websocketInfo.send(to_json{claims = claims, reason = reason, valid = claims ~= nil})
"""


@pytest.fixture(scope="module")
def server(wsgate_module):
    return wsgate_module({"verify.lua": VERIFY}, {"rateLimit": {"messagesPerSecond": 0}})


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jwt-keys")

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    made = {}
    for name, genargs in [("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
                          ("ec", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                          ("ec384", ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"])]:
        private = folder / f"{name}.pem"
        public = folder / f"{name}.pub.pem"
        openssl("genpkey", *genargs, "-out", str(private))
        openssl("pkey", "-in", str(private), "-pubout", "-out", str(public))
        made[name] = (private, public.read_text())
    return made


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_to_raw(der: bytes, size: int) -> bytes:
    """An ECDSA signature from DER (SEQUENCE of two INTEGERs) to JWS's R || S."""
    assert der[0] == 0x30
    offset = 2 if der[1] < 0x80 else 3
    values = []
    for _ in range(2):
        assert der[offset] == 0x02
        length = der[offset + 1]
        values.append(der[offset + 2:offset + 2 + length].lstrip(b"\0").rjust(size, b"\0"))
        offset += 2 + length
    return b"".join(values)


def token(claims: dict, alg: str = "HS256", secret: bytes = b"s3cret", private=None, header=None) -> str:
    head = b64url(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signing_input = f"{head}.{body}".encode()
    if alg.startswith("HS"):
        signature = hmac.new(secret, signing_input, getattr(hashlib, "sha" + alg[2:])).digest()
    elif alg in ("RS256", "ES256", "ES384"):
        digest = "-sha256" if alg != "ES384" else "-sha384"
        signature = subprocess.run(["openssl", "dgst", digest, "-sign", str(private)], input=signing_input,
                                   check=True, capture_output=True).stdout
        if alg.startswith("ES"):
            signature = der_to_raw(signature, 32 if alg == "ES256" else 48)
    else:
        signature = b""
    return f"{head}.{body}.{b64url(signature)}"


def verify(server, *requests):
    async def main():
        answers = []
        async with connect(server.url("/verify")) as ws:
            for tok, options in requests:
                await ws.send(json.dumps({"token": tok, "options": options}))
                answers.append(await recv_json(ws))
        return answers

    return run(main())


def later(seconds=3600):
    return int(time.time()) + seconds


def test_hmac_tokens_give_their_claims(server):
    answers = verify(server, *[(token({"sub": "u1", "exp": later(), "n": 7}, alg), {"secret": "s3cret"})
                               for alg in ("HS256", "HS384", "HS512")])
    for answer in answers:
        assert answer["valid"] is True, answer
        assert answer["claims"]["sub"] == "u1" and answer["claims"]["n"] == 7


def test_time_claims_with_and_without_leeway(server):
    expired = token({"sub": "u", "exp": int(time.time()) - 30})
    early = token({"sub": "u", "nbf": later(30)})
    answers = verify(server, (expired, {"secret": "s3cret"}), (expired, {"secret": "s3cret", "leeway_s": 60}),
                     (early, {"secret": "s3cret"}), (early, {"secret": "s3cret", "leeway_s": 60}))
    assert [a.get("reason") for a in answers] == ["expired", None, "not yet valid", None]


def test_tampered_wrong_key_none_and_unlisted_algorithms_are_refused(server):
    good = token({"sub": "u1", "admin": False})
    head, body, sig = good.split(".")
    tampered = f"{head}.{b64url(json.dumps({'sub': 'u1', 'admin': True}).encode())}.{sig}"
    none = token({"sub": "u1"}, alg="none", header={"alg": "none"})
    answers = verify(server, (tampered, {"secret": "s3cret"}), (good, {"secret": "other"}),
                     (none, {"secret": "s3cret"}), (none, {"secret": "s3cret", "algorithms": ["none"]}),
                     (good, {"secret": "s3cret", "algorithms": ["HS512"]}))
    assert [a.get("reason") for a in answers] == ["bad signature", "bad signature", "algorithm not allowed",
                                                  "algorithm not allowed", "algorithm not allowed"]


def test_rsa_and_ecdsa_tokens_and_keys_of_the_wrong_kind(server, keys):
    rsa_private, rsa_public = keys["rsa"]
    ec_private, ec_public = keys["ec"]
    ec384_private, ec384_public = keys["ec384"]
    rs = token({"sub": "rs"}, "RS256", private=rsa_private)
    es = token({"sub": "es"}, "ES256", private=ec_private)
    es384 = token({"sub": "es384"}, "ES384", private=ec384_private)
    # The RSA public key's text used as an HMAC secret: the algorithm-confusion attack.
    confused = token({"sub": "x"}, "HS256", secret=rsa_public.encode())
    answers = verify(server, (rs, {"public_key": rsa_public}), (es, {"public_key": ec_public}),
                     (es384, {"public_key": ec384_public}),
                     (rs, {"public_key": ec_public}), (es, {"public_key": rsa_public}),
                     (es, {"public_key": ec384_public}), (confused, {"public_key": rsa_public}),
                     (rs, {"secret": rsa_public}))
    assert [a.get("claims", {}).get("sub") for a in answers[:3]] == ["rs", "es", "es384"]
    assert [a.get("reason") for a in answers[3:]] == ["algorithm not allowed", "algorithm not allowed",
                                                      "algorithm not allowed", "algorithm not allowed",
                                                      "algorithm not allowed"]


def test_audience_and_issuer(server):
    tok = token({"sub": "u", "aud": ["app", "admin"], "iss": "https://id.example"})
    answers = verify(server, (tok, {"secret": "s3cret", "audience": "admin", "issuer": "https://id.example"}),
                     (tok, {"secret": "s3cret", "audience": ["other", "app"]}),
                     (tok, {"secret": "s3cret", "audience": "other"}),
                     (tok, {"secret": "s3cret", "issuer": "https://evil.example"}))
    assert [a.get("reason") for a in answers] == [None, None, "bad audience", "bad issuer"]


def test_malformed_tokens_and_bad_options(server):
    good = token({"sub": "u"})
    critical = token({"sub": "u"}, header={"alg": "HS256", "crit": ["exp"], "exp": 1})
    answers = verify(server, ("abc", {"secret": "s3cret"}), ("a.b", {"secret": "s3cret"}),
                     (good + "x", {"secret": "s3cret"}), ("!!.!!.!!", {"secret": "s3cret"}),
                     (critical, {"secret": "s3cret"}),
                     (good, {}), (good, {"secret": "s3cret", "public_key": "x"}),
                     (good, {"public_key": "not a key"}), (good, {"secret": "s3cret", "leeway_s": -1}),
                     (good, {"secret": "s3cret", "issuer": ["a"]}))
    reasons = [a.get("reason") for a in answers]
    assert reasons[:5] == ["malformed", "malformed", "bad signature", "malformed", "malformed"], reasons
    assert all(r.startswith("bad options: ") for r in reasons[5:]), reasons
