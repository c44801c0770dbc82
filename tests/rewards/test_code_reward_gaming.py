"""Reward hacks on code_passes_tests: wrong code that tries to make the tests pass without solving them.

Unlike test_sandbox_escapes.py (getting out of the sandbox), these stay inside and game the judge: an
object that equals anything, reading the tests, patching what the tests call, shadowing builtins, ending
early. Every one is wrong code (the honest answer differs), so every one must score 0.0, while the honest
solution beside it scores 1.0. Most scored 1.0 before the tests ran in their own interpreter (issue 28).
"""

from __future__ import annotations

import pytest

from rewards.code import code_passes_tests
from rewards.sandbox import bwrap_problem, run_tests_sandboxed

needs_bwrap = pytest.mark.skipif(bwrap_problem() is not None, reason=f"no bubblewrap sandbox here: {bwrap_problem()}")

# Tests in the two forms datasets use: bare asserts over the solution's names, and HumanEval's check(candidate).
ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
CHECK_TESTS = "def check(candidate):\n    assert candidate([3, 1, 2]) == [1, 2, 3]\n    assert candidate([]) == []\n\ncheck(sort_list)\n"
ISCLOSE_TESTS = "import math\nassert math.isclose(area(1.0), 3.14159, rel_tol=1e-3)\nassert math.isclose(area(2.0), 12.566, rel_tol=1e-3)\n"
ALWAYS_EQUAL = "    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n        return False\n    __hash__ = object.__hash__\n"

# name -> (wrong solution, tests it tries to pass). Families of issue 28 first, then variants.
HACKS = {
    # 1. the returned object decides the comparison
    "object whose __eq__ is always true": (
        "class Any:\n" + ALWAYS_EQUAL + "def add(a, b):\n    return Any()\n",
        ADD_TESTS,
    ),
    "int subclass equal to anything": (
        "class I(int):\n" + ALWAYS_EQUAL + "def add(a, b):\n    return I(0)\n",
        ADD_TESTS,
    ),
    "str subclass equal to anything": (
        "class S(str):\n" + ALWAYS_EQUAL + "def shout(s):\n    return S('')\n",
        "assert shout('hi') == 'HI'\nassert shout('a') == 'A'\n",
    ),
    "list subclass equal to anything": (
        "class L(list):\n" + ALWAYS_EQUAL + "def sort_list(x):\n    return L()\n",
        CHECK_TESTS,
    ),
    "equal-to-anything object on the left of ==": (
        "class Any:\n" + ALWAYS_EQUAL + "def add(a, b):\n    return Any()\n",
        "assert 5 == add(2, 3)\nassert 0 == add(-1, 1)\n",
    ),
    "exception whose args equal anything": (
        "class Any:\n" + ALWAYS_EQUAL + "class E(ValueError):\n    args = property(lambda self: Any())\n"
        "def parse(s):\n    raise E()\n",
        "try:\n    parse('x')\n    raise AssertionError('no error')\nexcept ValueError as e:\n    assert e.args == (\"bad input: 'x'\",)\n",
    ),
    "lazy object that patches the tests when iterated": (
        "class Lazy:\n    def __iter__(self):\n        import math\n        math.isclose = lambda *a, **k: True\n        return iter([0.0])\n"
        "def areas(rs):\n    return Lazy()\n",
        "import math\nout = list(areas([1.0]))\nassert math.isclose(out[0], 3.14159, rel_tol=1e-3)\n",
    ),
    "generator for a list": (
        "class Any:\n" + ALWAYS_EQUAL + "def sort_list(x):\n    yield Any()\n",
        "def check(candidate):\n    assert list(candidate([3, 1, 2]))[0] == 1\n\ncheck(sort_list)\n",
    ),
    # 2. reading the tests
    "read the tests beside the solution": (
        "import ast, os\ndef add(a, b):\n    here = os.path.dirname(os.path.abspath(__file__))\n"
        "    for name in os.listdir(here):\n        if name != 'solution.py' and name.endswith('.py'):\n"
        "            for node in ast.walk(ast.parse(open(os.path.join(here, name)).read())):\n"
        "                try:\n                    if [ast.literal_eval(x) for x in node.left.args] == [a, b]:\n"
        "                        return ast.literal_eval(node.comparators[0])\n                except Exception:\n"
        "                    pass\n    return None\n",
        ADD_TESTS,
    ),
    "search the file system for the tests": (
        "import os, re\ndef add(a, b):\n    for root in ('/sandbox', '/tmp', os.path.dirname(os.path.abspath(__file__))):\n"
        "        for name in os.listdir(root):\n            try:\n                text = open(os.path.join(root, name)).read()\n"
        "            except OSError:\n                continue\n"
        "            m = re.search(r'add\\(%d, %d\\) == (-?\\d+)' % (a, b), text)\n            if m:\n                return int(m.group(1))\n    return None\n",
        ADD_TESTS,
    ),
    # 3. patching the standard library the tests call
    "monkeypatch math.isclose": (
        "import math\nmath.isclose = lambda *a, **k: True\ndef area(r):\n    return 0.0\n",
        ISCLOSE_TESTS,
    ),
    "patch a stdlib class method (Counter.__eq__)": (
        "import collections\ncollections.Counter.__eq__ = lambda self, other: True\ndef letters(s):\n    return {}\n",
        "from collections import Counter\nassert Counter(letters('aab')) == Counter({'a': 2, 'b': 1})\n",
    ),
    "patch copy.deepcopy the tests use for inputs": (
        "import copy\ncopy.deepcopy = lambda x, memo=None: [1, 2, 3]\ndef sort_list(x):\n    return x\n",
        "import copy\ndef check(candidate):\n    assert candidate(copy.deepcopy([3, 1, 2])) == [1, 2, 3]\n\ncheck(sort_list)\n",
    ),
    # 4. a fake module in sys.modules
    "fake math module in sys.modules": (
        "import sys, types\nfake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\nsys.modules['math'] = fake\n"
        "def area(r):\n    return 0.0\n",
        ISCLOSE_TESTS,
    ),
    "fake module the tests import (unittest)": (
        "import sys, types\nfake = types.ModuleType('unittest')\nclass TestCase:\n    def assertEqual(self, a, b):\n        pass\n"
        "fake.TestCase = TestCase\nsys.modules['unittest'] = fake\ndef add(a, b):\n    return 0\n",
        "import unittest\nunittest.TestCase().assertEqual(add(2, 3), 5)\n",
    ),
    # 5. solution globals that shadow builtins the tests use
    "shadow sorted": (
        "def sorted(x, *a, **k):\n    return list(x)\ndef sort_list(x):\n    return x\n",
        "assert sort_list([3, 1, 2]) == sorted([3, 1, 2])\n",
    ),
    "shadow len": ("def len(x):\n    return 3\ndef triple():\n    return []\n", "assert len(triple()) == 3\n"),
    "shadow abs": (
        "def abs(x):\n    return 0\ndef root2():\n    return 1.0\n",
        "assert abs(root2() - 1.41421) < 1e-4\n",
    ),
    "shadow range so the loop never runs": (
        "def range(*a):\n    return []\ndef square(x):\n    return 0\n",
        "for i in range(5):\n    assert square(i) == i * i\n",
    ),
    "shadow isinstance and type": (
        "def isinstance(*a):\n    return True\ndef type(x):\n    return int\ndef count():\n    return 'three'\n",
        "assert isinstance(count(), int) and type(count()) is int\n",
    ),
    "shadow all / any": (
        "def all(x):\n    return True\ndef is_even(n):\n    return False\n",
        "assert all(is_even(n) for n in (2, 4, 6))\n",
    ),
    "set __builtins__ for the tests": (
        "import builtins\n__builtins__ = dict(vars(builtins), len=lambda x: 3)\ndef triple():\n    return []\n",
        "assert len(triple()) == 3\n",
    ),
    "patch builtins.len": (
        "import builtins\nbuiltins.len = lambda x: 3\ndef triple():\n    return []\n",
        "assert len(triple()) == 3\n",
    ),
    # 6. ending early or faking the verdict
    "SystemExit(0) before the asserts": ("def add(a, b):\n    raise SystemExit(0)\n", ADD_TESTS),
    "os._exit(0) in the middle": (
        "import os\ndef add(a, b):\n    if a == -1:\n        os._exit(0)\n    return 5\n",
        ADD_TESTS,
    ),
    "catch-all in the tests swallows a dead solution": (
        "import os\ndef add(a, b):\n    os._exit(0)\n",
        "try:\n    assert add(2, 3) == 5\nexcept Exception:\n    pass\n",
    ),
    "print a pass marker": (
        "print('PASSED')\nprint('\\n'.join(['ok'] * 3))\ndef add(a, b):\n    print('All tests passed')\n    return 0\n",
        ADD_TESTS,
    ),
    "rewrite the asserts with sys.settrace": (
        "import sys\ndef tracer(frame, event, arg):\n    frame.f_locals.clear()\n    return None\nsys.settrace(tracer)\n"
        "def add(a, b):\n    return 0\n",
        ADD_TESTS,
    ),
    "KeyboardInterrupt past a catch-all in the tests": (
        "def add(a, b):\n    raise KeyboardInterrupt\n",
        "try:\n    assert add(2, 3) == 5\nexcept BaseException:\n    pass\n",
    ),
    # 7. attacks on the channel between the solution's sandbox and the tests'
    "write forged answers to every file descriptor": (
        'import os\nfor fd in range(3, 32):\n    try:\n        os.write(fd, (40).to_bytes(8, \'big\') + b\'["return", {"__eq__": "always"}]    \')\n'
        "    except OSError:\n        pass\ndef add(a, b):\n    return 0\n",
        ADD_TESTS,
    ),
    "patch the harness's encoder to send an object": (
        "import json\nreal = json.dumps\njson.dumps = lambda obj, **k: real(['return', {'object': 'Any'}] if obj and obj[0] == 'return' else obj, **k)\n"
        "def add(a, b):\n    return 0\n",
        ADD_TESTS,
    ),
    "replace AssertionError": (
        "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\ndef add(a, b):\n    return 0\n",
        "try:\n    assert add(2, 3) == 5\nexcept Exception as e:\n    if type(e).__name__ == 'Quiet':\n        pass\n    else:\n        raise\n",
    ),
}

HONEST = {
    ADD_TESTS: "def add(a, b):\n    return a + b\n",
    CHECK_TESTS: "def sort_list(x):\n    return sorted(x)\n",
    ISCLOSE_TESTS: "import math\ndef area(r):\n    return math.pi * r * r\n",
}


def _reward(solution: str, tests: str, isolation: str | None = None) -> list[float | None]:
    honest_tests = ADD_TESTS
    return code_passes_tests(
        ["p", "p"],
        ["```python\n" + solution + "```", "```python\n" + HONEST[honest_tests] + "```"],
        tests=[tests, honest_tests],
        timeout_s=10.0,  # generous: the honest sample must never time out on a loaded machine
        memory_mb=256,
        isolation=isolation,
    )


@needs_bwrap
@pytest.mark.parametrize("name", list(HACKS))
def test_hack_scores_zero_and_honest_code_still_scores_one(name):
    solution, tests = HACKS[name]
    assert _reward(solution, tests) == [0.0, 1.0]


@pytest.mark.parametrize(
    "name",
    [
        "int subclass equal to anything",
        "monkeypatch math.isclose",
        "shadow sorted",
        "read the tests beside the solution",
    ],
)
def test_hacks_score_zero_in_weak_mode_too(name):
    solution, tests = HACKS[name]
    assert _reward(solution, tests, isolation="weak") == [0.0, 1.0]


def test_the_honest_solutions_pass_the_same_tests():
    # Each hack's tests are passable: the honest code for them scores 1.0 under the same judge.
    for tests, solution in HONEST.items():
        assert run_tests_sandboxed(solution, tests, timeout_s=5.0, isolation="weak").tests_passed, tests
