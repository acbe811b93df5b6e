"""A small client for the authproxy control API (stdlib only).

    from authproxy_client import Client
    c = Client("/run/authproxy/control.sock")
    ca_pem = c.attach("box-1", "/var/run/netns/box-1", proxy_config)
    c.update("box-1", new_proxy_config)
    c.get("box-1")          # redacted: opaque values absent, templates unresolved
    c.list()
    c.set_secret("OPENAI_API_KEY", "sk-...")
    c.detach("box-1")

    c.set_config("agents", proxy_config)   # stored, for attaches that name it
    c.attach("box-2", "/var/run/netns/box-2", config_name="agents")
    c.not_attached()        # sandboxes of the state directory the daemon does not serve

Errors raise AuthproxyError with the API's code, message and validation details
(each with the JSON path of the offending value). A daemon that cannot be reached,
or that closes the connection without an answer, raises OSError (FileNotFoundError,
ConnectionRefusedError, TimeoutError, ...) whose message names the control socket.
"""
import errno
import http.client
import json
import os
import socket
import struct
import urllib.parse

__all__ = ["Client", "AuthproxyError"]


class AuthproxyError(Exception):
    """An error answer of the control API."""

    def __init__(self, status, code, message, details=None):
        super().__init__("%s (%d): %s" % (code, status, message))
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A blocking connect, bounded by SO_SNDTIMEO as `authproxy ctl` bounds it:
            # with the daemon's backlog full (its 64 clients busy), it waits there for
            # a slot as the README says. Python's timeout makes the socket
            # non-blocking, and a non-blocking connect to a Unix socket whose backlog
            # is full fails at once (EAGAIN), so a burst of workers failed with
            # "Resource temporarily unavailable" instead of waiting.
            if not self.timeout and self.timeout is not None:
                s.settimeout(self.timeout)
            elif self.timeout is not None:
                sec = int(self.timeout)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                             struct.pack("ll", sec, int((self.timeout - sec) * 1e6)))
            s.connect(self._path)
        except OSError as e:
            s.close()
            if e.errno in (errno.EAGAIN, errno.EINPROGRESS):
                raise OSError(errno.ETIMEDOUT, "cannot connect to the control socket %s: "
                              "it took no connection within %g s (the daemon is busy)"
                              % (self._path, self.timeout)) from None
            raise OSError(e.errno, "cannot connect to the control socket %s: %s%s"
                          % (self._path, e.strerror or e,
                             " (is `authproxy serve` running?)"
                             if e.errno in (errno.ENOENT, errno.ECONNREFUSED,
                                            errno.ENOTSOCK) else "")) from None
        s.settimeout(self.timeout)
        self.sock = s


class Client:
    """Talks to `authproxy serve --control SOCKET`."""

    def __init__(self, socket_path="/run/authproxy/control.sock", timeout=30.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def _call(self, method, path, body=None, raw=False):
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            data = None
            headers = {}
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.connect()  # its errors name the socket
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except (socket.timeout, TimeoutError):
                raise OSError(errno.ETIMEDOUT, "no answer from the control socket %s "
                              "within %g s" % (self.socket_path, self.timeout)) from None
            except (OSError, http.client.HTTPException) as e:
                # Reset, or closed before the whole answer: a daemon stopping (or
                # killed) drops the connections it has not answered, and nothing
                # listens there after it; one still listening could not take it (out
                # of descriptors), as `authproxy ctl` tells them apart.
                down = self._down()
                raise OSError(down or getattr(e, "errno", None) or errno.ECONNRESET,
                              "the control socket %s closed the connection without an "
                              "answer (%s)%s" % (self.socket_path, e,
                              ", and nothing listens there now: the daemon stopped (is "
                              "`authproxy serve` running?)" if down else
                              ": is the daemon out of file descriptors? (see its log)")) \
                    from None
        finally:
            conn.close()
        if resp.status >= 400:
            try:
                err = json.loads(payload)["error"]
                raise AuthproxyError(resp.status, err.get("code", "error"),
                                     err.get("message", ""), err.get("details"))
            except (ValueError, KeyError, TypeError):
                raise AuthproxyError(resp.status, "error", payload.decode("utf-8", "replace"))
        if raw:
            return payload.decode()
        return json.loads(payload) if payload else None

    def _down(self):
        """The errno of a connect to the socket if nothing listens there, else 0."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.setblocking(False)
            s.connect(self.socket_path)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                return e.errno
        finally:
            s.close()
        return 0

    @staticmethod
    def _name(name):
        return urllib.parse.quote(name, safe="")

    def attach(self, name, netns, proxy_config=None, config_name=None, ca=None):
        """Attaches the namespace at `netns` with `proxy_config`, or with the stored
        config `config_name`; `ca` is an optional {"certificate": PEM, "key": PEM} to
        use instead of a generated CA. Returns the sandbox CA certificate (PEM)."""
        if (proxy_config is None) == (config_name is None):
            raise ValueError("give either proxy_config or config_name")
        body = {"netns": netns}
        if config_name is not None:
            body["proxy_config_name"] = config_name
        else:
            body["proxy_config"] = proxy_config
        if ca is not None:
            body["ca"] = ca
        r = self._call("PUT", "/v1/sandboxes/" + self._name(name), body)
        return r["ca_certificate"]

    def update(self, name, proxy_config):
        """Replaces the sandbox's proxy_config atomically."""
        return self._call("PATCH", "/v1/sandboxes/" + self._name(name),
                          {"proxy_config": proxy_config})

    def get(self, name):
        """The sandbox as the daemon holds it, redacted."""
        return self._call("GET", "/v1/sandboxes/" + self._name(name))

    def list(self):
        """The sandboxes served (see not_attached for the others)."""
        return self._call("GET", "/v1/sandboxes")["sandboxes"]

    def not_attached(self):
        """Sandboxes of the state directory the daemon does not serve, with the reason
        (their namespace is gone, or re-attaching failed): without network until
        attached again or detached (which forgets them)."""
        return self._call("GET", "/v1/sandboxes")["not_attached"]

    def ca(self, name):
        """The sandbox CA certificate (PEM)."""
        return self._call("GET", "/v1/sandboxes/" + self._name(name) + "/ca.pem", raw=True)

    def detach(self, name):
        self._call("DELETE", "/v1/sandboxes/" + self._name(name))

    def set_secret(self, key, value):
        """Stores a secret for {KEY} templates (write-only; encrypted at rest)."""
        self._call("PUT", "/v1/secrets/" + self._name(key), {"value": value})

    def delete_secret(self, key):
        self._call("DELETE", "/v1/secrets/" + self._name(key))

    def secrets(self):
        """Names of the secrets pushed through the API (never their values)."""
        return self._call("GET", "/v1/secrets")["secrets"]

    def set_config(self, name, proxy_config):
        """Stores a config (validated, sealed) for attaches that name it; returns the
        names of the secrets its templates use that are not pushed yet."""
        r = self._call("PUT", "/v1/configs/" + self._name(name), {"proxy_config": proxy_config})
        return r.get("unresolved_secrets", [])

    def get_config(self, name):
        """A stored config, redacted as get() is."""
        return self._call("GET", "/v1/configs/" + self._name(name))

    def delete_config(self, name):
        self._call("DELETE", "/v1/configs/" + self._name(name))

    def configs(self):
        """Names of the stored configs."""
        return self._call("GET", "/v1/configs")["configs"]

    def health(self):
        return self._call("GET", "/healthz")

    def metrics(self):
        return self._call("GET", "/metrics", raw=True)
