#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/<target>/).

The keys are the fixed test keys of fuzz/src/lib.rs (Ed25519 seeds 0x11*32
for the service, 0x22*32 for emergency tokens), so the tokens here verify
in the targets. Needs python3-cryptography. Run: python3 fuzz/seeds/make.py
"""
import base64, hashlib, json, os, uuid
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1_800_000_000
ISSUER, AUDIENCE = "https://issuer.fuzz", "holdfast"


def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def jwt(key, header, claims):
    message = f"{b64(header)}.{b64(claims)}"
    return f"{message}.{b64(key.sign(message.encode()))}"


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


service = Ed25519PrivateKey.from_private_bytes(b"\x11" * 32)
public = service.public_key().public_bytes(
    serialization.Encoding.Raw, serialization.PublicFormat.Raw
)
thumbprint = '{"crv":"Ed25519","kty":"OKP","x":"%s"}' % b64(public)
kid = b64(hashlib.sha256(thumbprint.encode()).digest())
sid, sub = "0190a0b0-c0d0-7e00-8000-000000000001", "0190a0b0-c0d0-7e00-8000-000000000002"
header = compact({"typ": "JWT", "alg": "EdDSA", "kid": kid})
claims = compact({"iss": ISSUER, "sub": sub, "aud": AUDIENCE, "iat": NOW, "nbf": NOW,
                  "exp": NOW + 900, "jti": "0190a0b0-c0d0-7e00-8000-000000000003",
                  "sid": sid, "roles": ["admin"]})
write("jwt_access", "valid", b"\x00" + jwt(service, header, claims).encode())
write("jwt_access", "signed-valid", b"\x01" + header + b"\n" + claims)
expired = compact({**json.loads(claims), "exp": NOW - 100, "iat": NOW - 1000, "nbf": NOW - 1000})
write("jwt_access", "signed-expired", b"\x01" + header + b"\n" + expired)
none = f"{b64(compact({'alg': 'none', 'kid': kid}))}.{b64(claims)}."
write("jwt_access", "alg-none", b"\x00" + none.encode())
write("jwt_access", "signed-hs256", b"\x01" + compact({"alg": "HS256", "kid": kid}) + b"\n" + claims)

emergency = Ed25519PrivateKey.from_private_bytes(b"\x22" * 32)
eheader = compact({"typ": "JWT", "alg": "EdDSA", "kid": "emergency"})
eclaims = compact({"iss": ISSUER, "aud": AUDIENCE, "sub": "emergency", "iat": NOW, "nbf": NOW,
                   "exp": NOW + 1800, "jti": "0190a0b0-c0d0-7e00-8000-000000000004",
                   "emergency": True, "reason": "database down, INC-42", "scope": ["admin"]})
write("jwt_emergency", "valid", b"\x00" + jwt(emergency, eheader, eclaims).encode())
write("jwt_emergency", "signed-valid", b"\x01" + eheader + b"\n" + eclaims)
long = compact({**json.loads(eclaims), "exp": NOW + 7200})
write("jwt_emergency", "signed-too-long", b"\x01" + eheader + b"\n" + long)
write("jwt_emergency", "access-key", b"\x00" + jwt(service, header, claims).encode())

secret = b64(bytes(range(32)))
write("refresh_token", "valid", f"{sid}.{secret}")
write("refresh_token", "padded", f"  {sid}.{secret}\n")
write("refresh_token", "short", f"{sid}.abc")
write("refresh_token", "braced", f"{{{sid}}}.{secret}")

write("api_key", "valid", "hf_0123456789ab_" + "0123456789abcdef" * 4)
write("api_key", "upper", "hf_0123456789AB_" + "0123456789ABCDEF" * 4)
write("api_key", "short", "hf_0123_abcd")

write("forwarded_for", "behind-proxy", b"\x00" + b"6.6.6.6, 203.0.113.9, 10.0.0.2")
write("forwarded_for", "two-headers", b"\x01" + b"203.0.113.9\n192.168.1.3, 10.1.1.1")
write("forwarded_for", "ipv6", b"\x02" + b"2001:db8::7, fd00::1, ::1")
write("forwarded_for", "untrusted-peer", b"\x03" + b"10.0.0.9")
write("forwarded_for", "garbage", b"\x00" + b"unknown, , 300.1.1.1, [::1]:80")

write("config_toml", "empty", "")
write("config_toml", "production", """env = "production"
listen = "127.0.0.1:8080"
issuer = "https://auth.example.com"
audience = "example"
master_key_file = "/etc/holdfast/master.key"
trusted_proxies = ["10.0.0.0/8", "192.0.2.7"]

[database]
url = "postgres://holdfast@127.0.0.1/holdfast"
replica_url = "postgres://holdfast@127.0.0.2/holdfast"
timeout = "2s"
pool_size = 16

[redis]
url = "redis://127.0.0.1:6379/0"
timeout = "250ms"

[breaker]
window = "10s"
minimum_calls = 5
failure_rate_threshold = 50
open_wait = "30s"
open_wait_max = "5m"
[breaker.redis]
minimum_calls = 3

[tokens]
algorithm = "EdDSA"
access_ttl = "15m"
refresh_ttl = "30d"
leeway = "30s"

[rate_limit]
login_per_ip = "20/min"
login_failures_per_account = "5/15min"
on_backend_failure = "local"

[passwords]
hash_workers = 2
queue = 64

[cache]
validation_ttl = "5m"
invalidation_poll = "5s"

[emergency]
enabled = false

[[idp]]
name = "upstream"
issuer = "https://idp.example.com/"
jwks_url = "https://idp.example.com/.well-known/jwks.json"
audience = "example"
jwks_ttl = "2h"
roles_claim = "groups"
""")
write("config_toml", "embedded", """[database]
url = "sqlite://./holdfast-data/holdfast.db"
[tokens]
access_ttl = "1h"
refresh_ttl = "2h"
""")

write("auth_bodies", "register", b"\x00" + compact(
    {"email": " Alice@Example.com ", "username": "alice", "password": "tangerine-orbit-lamp"}))
write("auth_bodies", "register-weak", b"\x00" + compact(
    {"email": "a@b", "username": "a", "password": "password1234"}))
write("auth_bodies", "login", b"\x01" + compact({"login": "alice", "password": "tangerine-orbit-lamp"}))
write("auth_bodies", "refresh", b"\x02" + compact({"refresh_token": f"{sid}.{secret}"}))
write("auth_bodies", "refresh-wrong-type", b"\x02" + b'{"refresh_token": 7}')
