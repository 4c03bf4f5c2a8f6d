"""A tally of named checks for the Python test scripts: each failure is kept
with what it was about, and `report` prints them and gives the exit code."""


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
        return ok

    def report(self, name):
        for failure in self.failed:
            print(f"FAILED {failure}")
        print(f"{name}: {self.passed} passed, {len(self.failed)} failed")
        return 1 if self.failed else 0
