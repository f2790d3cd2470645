"""The users every test server knows: the fast-ml admin (testing.servers.ADMIN) and these two."""

from __future__ import annotations

TRAINER = ("tina", "trainer-secret-1")
PREDICTOR = ("pete", "predictor-secret-1")
