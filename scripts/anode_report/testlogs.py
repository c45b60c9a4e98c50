"""The test runners' own machine-readable results, instead of their console text.

GoogleTest writes one JSON file per program (`--gtest_output=json:FILE`), CTest one JUnit XML file
per run (`--output-junit FILE`) and lists the tests it would run as JSON (`--show-only=json-v1`).
Their console output changes between versions (CTest 4 prints "100% tests passed out of 24"
where CTest 3 printed "..., 0 tests failed out of 24"); these formats are the documented ones.

A program that crashes or is killed before its end writes no file: the caller says so, rather
than reading a half-written console log as a result.
"""
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import List, Optional

PASSED, FAILED, SKIPPED, NOT_RUN = "passed", "failed", "skipped", "not run"


@dataclass
class Case:
    name: str
    outcome: str  # PASSED, FAILED, SKIPPED or NOT_RUN
    seconds: Optional[float] = None
    message: str = ""  # why it failed, was skipped or did not run, on one line


@dataclass
class Run:
    cases: List[Case] = field(default_factory=list)
    seconds: Optional[float] = None  # the whole run's wall time, as the runner reports it

    def count(self, outcome):
        return sum(1 for c in self.cases if c.outcome == outcome)

    def with_outcome(self, *outcomes):
        return [c for c in self.cases if c.outcome in outcomes]


def _one_line(text, limit=160):
    """A runner's message on one line (white space folded), cut at `limit` characters."""
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _seconds(text):
    """GoogleTest's "0.728s" or CTest's "1.00816" as a float; None when absent or unreadable."""
    try:
        return float(str(text).rstrip("s"))
    except (TypeError, ValueError):
        return None


def read_gtest_json(path):
    """A Run from GoogleTest's --gtest_output=json file. Case names are "Suite.Test"; a test with
    failures is FAILED (message: the first failure's text), GTEST_SKIP() is SKIPPED, a disabled
    test is NOT_RUN."""
    with open(path) as f:
        doc = json.load(f)
    run = Run(seconds=_seconds(doc.get("time")))
    for suite in doc.get("testsuites", []):
        for t in suite.get("testsuite", []):
            name = f"{suite.get('name', '?')}.{t.get('name', '?')}"
            failures = t.get("failures") or []
            if failures:
                outcome, message = FAILED, _one_line(failures[0].get("failure", ""))
            elif t.get("result") == "SKIPPED":
                outcome, message = SKIPPED, ""
            elif t.get("status") == "NOTRUN" or t.get("result") == "SUPPRESSED":
                outcome, message = NOT_RUN, "disabled"
            else:
                outcome, message = PASSED, ""
            run.cases.append(Case(name, outcome, _seconds(t.get("time")), message))
    return run


def read_ctest_junit(path):
    """A Run from CTest's --output-junit file. CTest marks a test the suite skips on purpose
    (SKIP_RETURN_CODE, SKIP_REGULAR_EXPRESSION) "notrun" with a <skipped> message starting
    "SKIP_": that is SKIPPED; any other "notrun" (a missing program, a failed fixture) is NOT_RUN.
    A timeout is a failure with an empty message in JUnit; its time tells it apart."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    run = Run(seconds=sum(_seconds(s.get("time")) or 0.0 for s in suites) if suites else None)
    for case in root.iter("testcase"):
        failure, skipped = case.find("failure"), case.find("skipped")
        status = case.get("status", "")
        if failure is not None or status == "fail":
            outcome = FAILED
            message = _one_line(failure.get("message", "") if failure is not None else "")
        elif skipped is not None or status in ("notrun", "disabled"):
            message = _one_line(skipped.get("message", "") if skipped is not None else status)
            outcome = SKIPPED if message.startswith("SKIP_") or status == "disabled" else NOT_RUN
        else:
            outcome, message = PASSED, ""
        run.cases.append(Case(case.get("name", "?"), outcome, _seconds(case.get("time")), message))
    return run


def read_ctest_list(path):
    """The names of the tests in `ctest --show-only=json-v1` output: what a run was to run, so
    that the tests a stopped run never started can be named."""
    with open(path) as f:
        doc = json.load(f)
    return [t["name"] for t in doc.get("tests", []) if "name" in t]
