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
