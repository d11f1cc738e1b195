"""The pseudonym is exactly the documented construction, however it is computed."""

import base64
import hashlib
import hmac

from caselink.streams.consent.pseudonym import Pseudonymiser
from hypothesis import given
from hypothesis import strategies as st


@given(key=st.binary(min_size=16, max_size=200), purpose=st.text(min_size=1), kind=st.sampled_from(
    ["citizen", "record", "case"]), value=st.text())
def test_pseudonym_is_the_first_160_bits_of_the_hmac_in_lower_case_base32(key: bytes, purpose: str, kind: str,
                                                                          value: str) -> None:
    mac = hmac.new(key, f"{purpose}\x1f{kind}\x1f{value}".encode(), hashlib.sha256).digest()
    expected = f"k9.{base64.b32encode(mac[:20]).decode().lower()}"
    assert Pseudonymiser(key, "k9").pseudonym(purpose, kind, value) == expected
    assert len(expected) == 3 + 32
