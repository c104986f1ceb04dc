"""Data-quality gates: Great Expectations suites over asset versions, and the blocking gate."""
