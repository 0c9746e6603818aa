"""The embeddings signal routes a paraphrase that shares no keyword with its candidates, with
the local model, through the real server and the openai SDK."""

import httpx
import openai
import pytest
import yaml

from routekeeper.testing import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.embeddings]

CONFIG = {
    "models": [
        {"name": "small", "backend": {"type": "echo"}},
        {"name": "billing", "backend": {"type": "echo"}},
    ],
    "signals": {
        "embeddings": [
            {
                "name": "billing",
                "candidates": [
                    "I want a refund for the fee on my invoice",
                    "my credit card was billed twice",
                ],
                "threshold": 0.45,
            }
        ]
    },
    "decisions": [
        {"name": "billing", "priority": 10, "when": "embeddings:billing", "model": "billing"},
        {"name": "default", "model": "small"},
    ],
}
PARAPHRASE = "Can I get my money back? You charged me two times this month."


def test_a_paraphrase_routes_by_meaning(tmp_path):
    candidates = " ".join(CONFIG["signals"]["embeddings"][0]["candidates"]).lower()
    for word in ("money", "back", "charge", "two", "times", "month"):
        assert word not in candidates  # no shared content word: only meaning can match
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    with ServerProcess(workspace=tmp_path / "ws", config=path) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": PARAPHRASE}]
        )
        assert raw.headers["x-routekeeper-decision"] == "billing"
        assert raw.parse().choices[0].message.content.startswith("echo:billing")
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "What is the capital of France?"}]
        )
        assert raw.headers["x-routekeeper-decision"] == "default"
        body = httpx.post(f"{server.url}/api/routing/explain", json={"prompt": PARAPHRASE}).json()
        signal = body["signals"][0]
        assert signal["ref"] == "embeddings:billing" and signal["matched"]
        assert (
            signal["score"] >= 0.45
            and signal["detail"]["closest"] in CONFIG["signals"]["embeddings"][0]["candidates"]
        )
