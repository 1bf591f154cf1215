"""pile.signature under the unix port, for tests/test_signature.py.

stdin: a JSON list of [name, key hex, message hex, signature hex]. For each, one line on
stdout: `name verdict yields`, the verdict True or False as the generator returned it and
how many times it yielded, or `name raised ExceptionName` when `verifying` raised.
"""

import json
import sys
from binascii import unhexlify

from pile import signature

for name, key, message, sig in json.loads(sys.stdin.read()):
    try:
        steps = signature.verifying(unhexlify(key), unhexlify(message), unhexlify(sig))
        yields = 0
        while True:
            got = next(steps)
            assert got is None
            yields += 1
    except StopIteration as done:
        print(name, done.value, yields)
    except Exception as exc:  # reported, and the test says whether it was expected
        print(name, "raised", type(exc).__name__)
