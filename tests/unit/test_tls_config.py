"""TLS settings of the client (TlsConfig, STRAIT_TLS* variables) and of the server (STRAIT_TLS_*_FILE), and
`strait serve`'s mode from STRAIT_MODE: each mistake is refused with the name of what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from strait_client import ClientConfig, TlsConfig
from strait_client._config import USER_AGENT, env_credentials, with_env_tls
from strait_server.config import ConfigError, Settings, serve_mode
from strait_server.tls import server_credentials


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    other = ca.issue_cert("elsewhere")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem",
             "other_key": tmp_path / "other-key.pem", "junk": tmp_path / "junk.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    files["junk"].write_text("not a certificate\n")
    return files


def test_no_variable_means_plaintext_and_any_option_turns_tls_on() -> None:
    assert TlsConfig.from_env({}) is None
    assert TlsConfig.from_env({"STRAIT_TLS": ""}) is None
    assert TlsConfig.from_env({"STRAIT_TLS": "0"}) is None
    assert TlsConfig.from_env({"STRAIT_TLS": "1"}) == TlsConfig()
    assert TlsConfig.from_env({"STRAIT_TLS_CA_FILE": "/etc/ca.pem"}) == TlsConfig(ca_file="/etc/ca.pem")
    assert TlsConfig.from_env({"STRAIT_TLS": "true", "STRAIT_TLS_CLIENT_CERT_FILE": "c.pem",
                               "STRAIT_TLS_CLIENT_KEY_FILE": "k.pem", "STRAIT_TLS_SERVER_NAME": "strait.example"}) \
        == TlsConfig(cert_file="c.pem", key_file="k.pem", server_name="strait.example")


def test_contradicting_or_half_variables_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="STRAIT_TLS: 'maybe' is not a boolean"):
        TlsConfig.from_env({"STRAIT_TLS": "maybe"})
    with pytest.raises(ValueError, match="STRAIT_TLS turns TLS off, but STRAIT_TLS_CA_FILE"):
        TlsConfig.from_env({"STRAIT_TLS": "off", "STRAIT_TLS_CA_FILE": "/etc/ca.pem"})
    with pytest.raises(ValueError, match="STRAIT_TLS_CLIENT_CERT_FILE and STRAIT_TLS_CLIENT_KEY_FILE"):
        TlsConfig.from_env({"STRAIT_TLS_CLIENT_CERT_FILE": "c.pem"})
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        TlsConfig(key_file="k.pem")


def test_files_are_checked_when_credentials_are_made(pem: dict[str, Path], tmp_path: Path) -> None:
    assert TlsConfig(ca_file=pem["ca"], cert_file=pem["cert"], key_file=pem["key"]).credentials() is not None
    with pytest.raises(ValueError, match=r"cannot read '.*missing\.pem': No such file"):
        TlsConfig(ca_file=tmp_path / "missing.pem").credentials()
    with pytest.raises(ValueError, match=r"junk\.pem' holds no PEM certificate"):
        TlsConfig(ca_file=pem["junk"]).credentials()
    with pytest.raises(ValueError, match="the key does not belong to the certificate"):
        TlsConfig(cert_file=pem["cert"], key_file=pem["other_key"]).credentials()


def test_the_server_name_becomes_a_channel_option() -> None:
    config = ClientConfig(tls=TlsConfig(server_name="strait.example"))
    assert config.grpc_options() == [("grpc.primary_user_agent", USER_AGENT),
                                     ("grpc.ssl_target_name_override", "strait.example")]


def test_from_env_takes_tls_from_the_variables_unless_the_caller_chose(monkeypatch: pytest.MonkeyPatch,
                                                                       pem: dict[str, Path]) -> None:
    monkeypatch.setenv("STRAIT_TLS_CA_FILE", str(pem["ca"]))
    monkeypatch.setenv("STRAIT_TLS_SERVER_NAME", "strait.example")
    chosen = with_env_tls({"timeout": 5})
    assert chosen["timeout"] == 5 and chosen["config"].tls == TlsConfig(ca_file=str(pem["ca"]),
                                                                         server_name="strait.example")
    own = TlsConfig(ca_file="/elsewhere.pem")
    assert with_env_tls({"tls": own}) == {"tls": own}
    assert with_env_tls({"config": ClientConfig(tls=own)})["config"].tls is own
    # A RunContext opened with only an address does the same.
    credentials, options = env_credentials(None)
    assert credentials is not None and options == [("grpc.ssl_target_name_override", "strait.example")]
    monkeypatch.delenv("STRAIT_TLS_CA_FILE")
    monkeypatch.delenv("STRAIT_TLS_SERVER_NAME")
    assert with_env_tls({}) == {} and env_credentials(None) == (None, [])


def test_server_tls_settings_go_together() -> None:
    with pytest.raises(ConfigError, match="STRAIT_TLS_CERT_FILE is set but STRAIT_TLS_KEY_FILE is not"):
        Settings.from_env({"STRAIT_TLS_CERT_FILE": "/etc/strait/cert.pem"})
    with pytest.raises(ConfigError, match=r"STRAIT_TLS_CLIENT_CA_FILE .* needs TLS"):
        Settings.from_env({"STRAIT_TLS_CLIENT_CA_FILE": "/etc/strait/clients.pem"})
    assert server_credentials(Settings()) is None


def test_server_tls_files_are_named_when_they_cannot_be_used(pem: dict[str, Path], tmp_path: Path) -> None:
    good = Settings(tls_cert_file=str(pem["cert"]), tls_key_file=str(pem["key"]))
    assert server_credentials(good) is not None
    assert server_credentials(good.with_(tls_client_ca_file=str(pem["ca"]))) is not None
    with pytest.raises(ConfigError, match="STRAIT_TLS_CERT_FILE: cannot read"):
        server_credentials(good.with_(tls_cert_file=str(tmp_path / "gone.pem")))
    with pytest.raises(ConfigError, match=r"STRAIT_TLS_CERT_FILE and STRAIT_TLS_KEY_FILE: .*does not belong"):
        server_credentials(good.with_(tls_key_file=str(pem["other_key"])))
    with pytest.raises(ConfigError, match=r"STRAIT_TLS_CERT_FILE and STRAIT_TLS_KEY_FILE: .*not a PEM"):
        server_credentials(good.with_(tls_cert_file=str(pem["junk"])))
    with pytest.raises(ConfigError, match=r"STRAIT_TLS_CLIENT_CA_FILE: .*holds no PEM certificate"):
        server_credentials(good.with_(tls_client_ca_file=str(pem["junk"])))


def test_the_serve_mode_comes_from_the_flag_then_strait_mode() -> None:
    assert serve_mode(None, {}) == "all"
    assert serve_mode(None, {"STRAIT_MODE": "worker"}) == "worker"
    assert serve_mode("api", {"STRAIT_MODE": "worker"}) == "api"
    with pytest.raises(ConfigError, match="STRAIT_MODE must be one of all, api, worker, scheduler, not 'both'"):
        serve_mode(None, {"STRAIT_MODE": "both"})
