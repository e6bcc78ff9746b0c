from __future__ import annotations

from tapedeck import tokens


def test_tokens_are_scoped_and_expire() -> None:
    token = tokens.sign("k", tokens.UPLOAD, "session-1", 2_000)
    assert tokens.verify("k", tokens.UPLOAD, "session-1", token, now=1_000)
    assert not tokens.verify("k", tokens.UPLOAD, "session-1", token, now=2_001)  # expired
    assert not tokens.verify("k", tokens.UPLOAD, "session-2", token, now=1_000)  # other session
    assert not tokens.verify("k", tokens.DOWNLOAD, "session-1", token, now=1_000)  # other purpose
    assert not tokens.verify("other", tokens.UPLOAD, "session-1", token, now=1_000)  # other key
    expires, _, mac = token.partition(".")
    assert not tokens.verify("k", tokens.UPLOAD, "session-1", f"9{expires}.{mac}", now=1_000)
    for junk in ("", ".", "abc", "1.", "-1.abc", "1" * 40 + ".x"):
        assert not tokens.verify("k", tokens.UPLOAD, "session-1", junk, now=0)


def test_malformed_tokens_are_refused_not_raised() -> None:
    """Non-ASCII digits pass str.isdigit() (and int() even parses some); a non-ASCII MAC
    made hmac.compare_digest raise TypeError. Each is simply not a valid token."""
    good = tokens.sign("k", tokens.UPLOAD, "session-1", 2_000)
    expires, _, mac = good.partition(".")
    for junk in (
        "²²²².abc",
        "²" * 12 + "." + mac,
        "123.é",
        "99999999999.é",
        f"{expires}.{mac[:-1]}é",
        f"{expires}.{'é' * len(mac)}",
        "١٢٣٤٥٦٧٨٩٠١.x",  # Arabic-Indic digits: int() reads them
        "\uff12\uff10\uff10\uff10."
        + mac,  # fullwidth 2000 for the right expiry, with the right MAC
        f" {expires}.{mac}",
        f"{expires} .{mac}",
        f"+{expires}.{mac}",
        f"{expires}.{mac}\x00",
        "\udcff.abc",  # a lone surrogate, as a badly decoded query may hold
        f"{expires}.\udcff",
    ):
        assert not tokens.verify("k", tokens.UPLOAD, "session-1", junk, now=1_000), junk
    assert tokens.verify("k", tokens.UPLOAD, "session-1", good, now=1_000)


def test_upload_tokens_carry_the_replica_signed() -> None:
    """The owner travels in the token; changing it (or dropping it) breaks the signature."""
    plain = tokens.upload_token("k", "s1", 60)
    assert "~" not in plain  # replica 0: the token format from before replicas
    assert tokens.upload_replica("k", "s1", plain) == 0
    placed = tokens.upload_token("k", "s1", 60, replica=2)
    assert placed.startswith("2~")
    assert tokens.upload_replica("k", "s1", placed) == 2
    assert tokens.upload_replica("k", "s2", placed) is None
    assert tokens.upload_replica("other", "s1", placed) is None
    body = placed.partition("~")[2]
    for steered in (f"3~{body}", body, f"02~{body}", f"0~{plain}", f"1~{plain}", f"²~{body}"):
        assert tokens.upload_replica("k", "s1", steered) is None, steered
    assert tokens.upload_replica("k", "s1", placed, now=10**11) is None  # expired
