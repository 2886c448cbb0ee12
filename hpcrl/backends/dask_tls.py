"""TLS for Dask: the ``dask_security`` config as a ``distributed.security.Security``,
and joining a scheduler with a clear error instead of a hang or a raw traceback.

``dask_security`` (``--dask-tls-ca-file``, ``--dask-tls-cert``, ``--dask-tls-key``
on the command line) is None (Dask's own configuration: plain TCP unless the
site's Dask config files set ``distributed.comm.tls``) or a dict of
``Security``'s keyword arguments:

- ``tls_ca_file``, ``tls_client_cert``, ``tls_client_key``: PEM files; the
  CA that signed the cluster's certificates, and hpcrl's certificate and key
  (the key may instead be appended to the certificate file). Dask's TLS is
  mutual: the scheduler and workers check hpcrl's certificate too.
- ``tls_scheduler_cert``/``_key``, ``tls_worker_cert``/``_key``: for a local
  cluster hpcrl starts (default: the client's certificate and key).
- ``require_encryption`` (default: True when a file is given): refuse plain
  TCP. Alone, for a local cluster hpcrl starts, it makes a temporary CA and
  certificate kept in memory (``Security.temporary()``), so that only this
  process can use the cluster.
- ``tls_ciphers`` (an OpenSSL cipher string), ``tls_min_version`` and
  ``tls_max_version`` (1.2 or 1.3).
"""

from __future__ import annotations

import difflib
import gc
import os
import ssl
from collections.abc import Mapping
from typing import Any

import distributed
from distributed.security import Security

# PEM files, with the flag that gives the client's ones on the command line.
CLIENT_FILES = {
    "tls_ca_file": "--dask-tls-ca-file",
    "tls_client_cert": "--dask-tls-cert",
    "tls_client_key": "--dask-tls-key",
}
# Certificates of a local cluster's scheduler and workers (default: the client's).
CLUSTER_FILES = ("tls_scheduler_cert", "tls_scheduler_key", "tls_worker_cert", "tls_worker_key")
OTHER_KEYS = ("require_encryption", "tls_ciphers", "tls_min_version", "tls_max_version")
SECURITY_KEYS = (*CLIENT_FILES, *CLUSTER_FILES, *OTHER_KEYS)
TLS_VERSIONS = {1.2: ssl.TLSVersion.TLSv1_2, 1.3: ssl.TLSVersion.TLSv1_3}
FLAGS_HINT = (
    "--dask-tls-ca-file CA.pem --dask-tls-cert CERT.pem --dask-tls-key KEY.pem (config "
    "dask_security: {tls_ca_file: ..., tls_client_cert: ..., tls_client_key: ...})"
)


def make_security(options: Mapping[str, Any] | None, *, local_cluster: bool) -> Security | None:
    """The ``Security`` of a ``dask_security`` config (None: Dask's own configuration).

    Files are checked here, and the client's TLS context built, so that a missing
    file or a key that does not belong to its certificate is reported before any
    cluster is started or joined.

    Args:
        options: the ``dask_security`` dict (see the module docstring).
        local_cluster: whether hpcrl starts the cluster (scheduler and worker
            certificates allowed, temporary certificates possible) or joins one.

    Raises:
        ValueError: an unknown key, a wrong value, a missing or unloadable file,
            naming the key, its command-line flag and the fix.

    Example:
        >>> make_security(None, local_cluster=True) is None
        True
        >>> make_security({"require_encryption": True}, local_cluster=True).require_encryption
        True
    """
    if options is None:
        return None
    kwargs = _security_kwargs(options, local_cluster)
    files = [key for key in (*CLIENT_FILES, *CLUSTER_FILES) if key in kwargs]
    if not files:
        if not kwargs.get("require_encryption"):
            return None
        if not local_cluster:
            raise ValueError(
                "dask_security asks for encryption but names no certificate; to join a TLS "
                f"scheduler give its CA file and a certificate and key it accepts: {FLAGS_HINT}"
            )
        return _temporary_security(kwargs)
    if "tls_ca_file" not in kwargs or "tls_client_cert" not in kwargs:
        missing = [key for key in ("tls_ca_file", "tls_client_cert") if key not in kwargs]
        raise ValueError(
            f"dask_security needs {' and '.join(missing)} "
            f"({', '.join(CLIENT_FILES[k] for k in missing)}) with {', '.join(files)}: Dask's "
            f"TLS checks both ends, so hpcrl needs the CA and a certificate: {FLAGS_HINT}"
        )
    if local_cluster:
        for role in ("scheduler", "worker"):
            if f"tls_{role}_cert" not in kwargs:
                kwargs[f"tls_{role}_cert"] = kwargs["tls_client_cert"]
                kwargs[f"tls_{role}_key"] = kwargs.get("tls_client_key")
    kwargs.setdefault("require_encryption", True)
    security = Security(**kwargs)
    for role in ("client", "scheduler", "worker") if local_cluster else ("client",):
        _check_tls_context(security, role)
    return security


def uses_tls(security: Security | None) -> bool:
    """Whether ``security`` (None: Dask's configuration) gives hpcrl a TLS identity."""
    security = security or Security()
    return bool(security.tls_ca_file and security.tls_client_cert)


def check_join(address: str, security: Security | None) -> None:
    """Raise ConnectionError, before connecting, when ``address`` and ``security``
    cannot match: a ``tls://`` scheduler without certificates, or encryption
    required for a ``tcp://`` one."""
    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme == "tls" and not uses_tls(security):
        raise ConnectionError(
            f"the Dask scheduler at {address!r} uses TLS and hpcrl has no certificate for it: "
            f"give the cluster's CA file and a certificate and key it accepts: {FLAGS_HINT}"
        )
    if scheme != "tls" and (security or Security()).require_encryption:
        raise ConnectionError(
            f"dask_security asks for TLS but the Dask scheduler address {address!r} is not "
            "encrypted: give the scheduler's tls:// address (it prints 'Scheduler at: "
            "tls://...'), or drop the TLS settings for a plain tcp:// scheduler"
        )


def connect_client(
    target: Any, security: Security | None, timeout_s: float, **client_kwargs: Any
) -> distributed.Client:
    """A ``distributed.Client`` of ``target`` (an address or a cluster object).

    Failing to connect within ``timeout_s`` (Dask bounds the connection and its
    handshake by it) is a ConnectionError of one line that says why and what to
    do, and leaves no Dask IO-loop thread behind, so that a later client in the
    same process starts cleanly.
    """
    address = target if isinstance(target, str) else target.scheduler_address
    if isinstance(target, str):
        check_join(address, security)
    try:
        return distributed.Client(target, security=security, timeout=timeout_s, **client_kwargs)
    except Exception as err:  # noqa: BLE001 - each cause becomes a message naming the fix
        message = connection_error_message(address, err, uses_tls(security), timeout_s)
    # Collect the half-made Client (a reference cycle) now, in this thread: collected
    # later inside the next client's IO-loop thread, its close() waits for the lock that
    # client's start holds, and that start fails after 10 s with an AssertionError.
    gc.collect()
    raise ConnectionError(message)


def connection_error_message(address: str, err: BaseException, tls: bool, timeout_s: float) -> str:
    """One line on why joining ``address`` failed with ``err``, and the fix.

    Example:
        >>> error = ssl.SSLCertVerificationError(1, "certificate verify failed")
        >>> print(connection_error_message("tls://h:8786", error, True, 30))
        ... # doctest: +NORMALIZE_WHITESPACE
        could not join the Dask scheduler at 'tls://h:8786' over TLS: hpcrl does not trust
        the scheduler's certificate (certificate verify failed); --dask-tls-ca-file must be
        the CA that signed the cluster's certificates (config dask_security)
    """
    # Dask wraps the ssl module's errors, or only quotes them ("... SSLError: [SSL: ...").
    tls_error = next(
        (c for c in _causes(err) if isinstance(c, ssl.SSLError) or "[SSL" in str(c)), None
    )
    if tls_error is not None:
        return _tls_error_message(address, tls_error)
    said = str(err) or type(err).__name__
    hint = (
        ""
        if tls
        else " (a scheduler that uses TLS has a tls:// address and needs --dask-tls-ca-file, "
        "--dask-tls-cert and --dask-tls-key)"
    )
    return (
        f"could not connect to the Dask scheduler at {address!r} within {timeout_s:g}s "
        f"({said}); check the address (the scheduler prints it as 'Scheduler at: ...') and "
        f"that this machine can reach it{hint}, or leave dask_address unset to start a "
        "local cluster"
    )


def _tls_error_message(address: str, error: BaseException) -> str:
    text = str(error)
    detail = text[text.find("[SSL") :] if "[SSL" in text else text
    if isinstance(error, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        what = "hpcrl does not trust the scheduler's certificate"
        fix = "--dask-tls-ca-file must be the CA that signed the cluster's certificates"
    elif isinstance(error, ssl.SSLEOFError) or "ALERT" in text:
        what = "the scheduler refused hpcrl's certificate"
        fix = "--dask-tls-cert (and its --dask-tls-key) must be signed by the cluster's CA"
    else:
        what = "the TLS handshake failed"
        fix = "check --dask-tls-ca-file, --dask-tls-cert and --dask-tls-key"
    return (
        f"could not join the Dask scheduler at {address!r} over TLS: {what} ({detail}); "
        f"{fix} (config dask_security)"
    )


def _security_kwargs(options: Mapping[str, Any], local_cluster: bool) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise ValueError(
            "config key 'dask_security' must be a dict like {'tls_ca_file': 'ca.pem', "
            f"'tls_client_cert': 'cert.pem', 'tls_client_key': 'key.pem'}}, got {options!r}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key not in SECURITY_KEYS:
            close = difflib.get_close_matches(str(key), SECURITY_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(SECURITY_KEYS)}"
            raise ValueError(f"unknown dask_security key {key!r}; {hint}")
        if value is None:
            continue
        if key in CLUSTER_FILES and not local_cluster:
            raise ValueError(
                f"dask_security key {key!r} is for a local cluster that hpcrl starts; joining "
                "a cluster (dask_address) needs only tls_ca_file, tls_client_cert and "
                "tls_client_key: drop it"
            )
        kwargs[key] = _checked_value(key, value)
    return kwargs


def _checked_value(key: str, value: Any) -> Any:
    if key == "require_encryption":
        if not isinstance(value, bool):
            raise ValueError(
                f"dask_security key 'require_encryption' must be true or false, got {value!r}"
            )
        return value
    if key in ("tls_min_version", "tls_max_version"):
        if value not in TLS_VERSIONS or isinstance(value, bool):
            raise ValueError(f"dask_security key {key!r} must be 1.2 or 1.3, got {value!r}")
        return TLS_VERSIONS[value]
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"dask_security key {key!r} must be a non-empty string, got {value!r}")
    if key == "tls_ciphers":
        return str(value)
    path = os.path.expanduser(os.fspath(value))
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        why = "is not readable" if os.path.isfile(path) else "does not exist"
        flag = f" ({CLIENT_FILES[key]})" if key in CLIENT_FILES else ""
        raise ValueError(f"dask_security {key}{flag}: the file {path!r} {why}")
    return path


def _check_tls_context(security: Security, role: str) -> None:
    tls = security.get_tls_config_for_role(role)
    try:
        security.get_connection_args(role)
    except (ssl.SSLError, OSError, ValueError) as err:
        raise ValueError(
            f"cannot load the TLS files of the Dask {role} (CA {tls['ca_file']!r}, "
            f"certificate {tls['cert']!r}, key {tls['key']!r}): {err}; each must be PEM, "
            "and the key the one that belongs to the certificate"
        ) from None


def _temporary_security(kwargs: dict[str, Any]) -> Security:
    try:
        return Security.temporary(**{k: v for k, v in kwargs.items() if k != "require_encryption"})
    except ImportError:
        raise ValueError(
            "dask_security {require_encryption: true} without certificate files makes "
            "temporary ones, which needs the cryptography package: pip install cryptography, "
            f"or give certificate files: {FLAGS_HINT}"
        ) from None


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
