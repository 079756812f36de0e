"""No handler prints a token (issue 16, item 11), through a real train.py process: a Hub server whose error echoes the
request's token (the redaction in-process: tests/unit/test_untrusted.py)."""

import pytest

import driver
from hub_fixtures import TOKEN, FakeHub, hub_env, only


class EchoingHub(FakeHub):
    """A Hub whose commit endpoint fails with an error body that echoes the request's Authorization header."""

    def handle(self, path, headers, body):
        status, reply = super().handle(path, headers, body)
        if "/commit/" in path.split("?")[0]:
            auth = headers.get("Authorization") or headers.get("authorization")
            return 500, {"error": f"internal error handling request with headers Authorization: {auth}"}
        return status, reply


@pytest.mark.slow
def test_a_server_error_echoing_the_token_is_redacted_on_the_console_and_in_train_log(tmp_path):
    server = EchoingHub()
    try:
        proc = driver.run("train", f"hydra.run.dir={tmp_path / 'run'}", "trainer.max_steps=30", "trainer.max_epochs=-1",
                          "trainer.val_check_interval=10", "trainer.enable_progress_bar=false", "print_config=false",
                          "callbacks=no_images", "hub.sync_logs=true", "hub.repo_id=me/vae-echo", "hub=push",
                          "hub.sync_every_minutes=0.003", timeout=400, env=only(hub_env(server.url, home=tmp_path / "hf")))
    finally:
        server.close()
    log = (tmp_path / "run" / "train.log").read_text()
    echoed = [r for r in server.requests if "/commit/" in r["path"]]
    assert echoed and echoed[0]["authorization"] == f"Bearer {TOKEN}"  # the server did see (and echo) the token
    for text in (proc.stdout, proc.stderr, log):
        assert TOKEN not in text
    assert "Authorization: Bearer ***" in proc.stderr + log  # ... and its error was logged, redacted
