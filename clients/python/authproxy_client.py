"""A small client for the authproxy control API (stdlib only).

    from authproxy_client import Client
    c = Client("/run/authproxy/control.sock")
    ca_pem = c.attach("box-1", "/var/run/netns/box-1", proxy_config)
    c.update("box-1", new_proxy_config)
    c.get("box-1")          # redacted: opaque values absent, templates unresolved
    c.list()
    c.set_secret("OPENAI_API_KEY", "sk-...")
    c.detach("box-1")

Errors raise AuthproxyError with the API's code, message and validation details
(each with the JSON path of the offending value).
"""
import http.client
import json
import socket
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
        s.settimeout(self.timeout)
        s.connect(self._path)
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
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
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

    @staticmethod
    def _name(name):
        return urllib.parse.quote(name, safe="")

    def attach(self, name, netns, proxy_config):
        """Attaches the namespace at `netns`; returns the sandbox CA certificate (PEM)."""
        r = self._call("PUT", "/v1/sandboxes/" + self._name(name),
                       {"netns": netns, "proxy_config": proxy_config})
        return r["ca_certificate"]

    def update(self, name, proxy_config):
        """Replaces the sandbox's proxy_config atomically."""
        return self._call("PATCH", "/v1/sandboxes/" + self._name(name),
                          {"proxy_config": proxy_config})

    def get(self, name):
        """The sandbox as the daemon holds it, redacted."""
        return self._call("GET", "/v1/sandboxes/" + self._name(name))

    def list(self):
        return self._call("GET", "/v1/sandboxes")["sandboxes"]

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

    def health(self):
        return self._call("GET", "/healthz")

    def metrics(self):
        return self._call("GET", "/metrics", raw=True)
