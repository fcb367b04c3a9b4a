"""In-memory OpenID Connect provider for tests (authlib server side): code flow,
mandatory PKCE S256, RS256 id_tokens, JWKS and a bearer-protected userinfo."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError, TokenMixin
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin, UserInfo, UserInfoEndpoint
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, Response, jsonify, request
from joserfc.jwk import RSAKey
from werkzeug.serving import BaseWSGIServer, make_server

SCOPES = ["openid", "email", "profile"]
CODE_LIFETIME = 600


@dataclass
class OidcUser:
    """The end user the provider authenticates at /authorize."""

    sub: str
    email: str
    email_verified: bool = True
    preferred_username: str | None = None
    name: str | None = None


_CLAIMS = ("sub", "email", "email_verified", "preferred_username", "name")


def _claims(user: OidcUser, scope: str) -> UserInfo:
    """Standard claims of ``user``, limited to what ``scope`` grants (OIDC 5.4)."""
    info = {k: getattr(user, k) for k in _CLAIMS if getattr(user, k) is not None}
    return UserInfo(info).filter(scope)


@dataclass
class _Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uri: str
    client_metadata: dict[str, Any] = field(default_factory=dict)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # OIDC makes redirect_uri mandatory on the request

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class _Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: OidcUser
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    auth_time: int

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass
class _Token(TokenMixin):
    client: _Client
    user: OidcUser
    scope: str
    expires_at: float

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return False

    def get_user(self) -> OidcUser:
        return self.user

    def get_client(self) -> _Client:
        return self.client


class _Server(AuthorizationServer):
    def __init__(self, provider: OidcProvider) -> None:
        super().__init__()
        self.provider = provider

    def query_client(self, client_id: str) -> _Client | None:
        client = self.provider._client
        return client if client_id == client.client_id else None

    def save_token(self, token: dict[str, Any], req: Any) -> None:
        expires_at = time.time() + token["expires_in"]
        self.provider._tokens[token["access_token"]] = _Token(
            req.client, req.user, token.get("scope", ""), expires_at
        )


class _CodeGrant(AuthorizationCodeGrant):
    server: _Server

    def save_authorization_code(self, code: str, req: Any) -> None:
        data = req.payload.data
        provider = self.server.provider
        if nonce := data.get("nonce"):
            provider._nonces.add(nonce)
        provider._codes[code] = _Code(
            code, req.client.client_id, req.payload.redirect_uri, req.scope, req.user, nonce,
            data["code_challenge"], data["code_challenge_method"], int(time.time()),
        )

    def query_authorization_code(self, code: str, client: _Client) -> _Code | None:
        item = self.server.provider._codes.get(code)
        if item and item.client_id == client.client_id:
            return item if time.time() < item.auth_time + CODE_LIFETIME else None
        return None

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        self.server.provider._codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: _Code) -> OidcUser:
        return authorization_code.user


class _S256Only(CodeChallenge):
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        # authlib treats PKCE as optional for confidential clients; we do not.
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge'")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)


class _OpenIDCode(OpenIDCode):
    def __init__(self, provider: OidcProvider) -> None:
        super().__init__(require_nonce=False)
        self.provider = provider

    def exists_nonce(self, nonce: str, req: Any) -> bool:
        return nonce in self.provider._nonces

    def resolve_client_private_key(self, client: _Client) -> RSAKey:
        return self.provider._key

    def get_client_claims(self, client: _Client) -> dict[str, Any]:
        return {"iss": self.provider.issuer, "aud": client.client_id}

    def get_encode_header(self, client: _Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": self.provider._key.kid or ""}

    def generate_user_info(self, user: OidcUser, scope: str) -> UserInfo:
        return _claims(user, scope)


class _UserInfo(UserInfoEndpoint):
    def generate_user_info(self, user: OidcUser, scope: str) -> UserInfo:
        return _claims(user, scope)


class _Bearer(BearerTokenValidator):
    def __init__(self, provider: OidcProvider) -> None:
        super().__init__()
        self.provider = provider

    def authenticate_token(self, token_string: str) -> _Token | None:
        return self.provider._tokens.get(token_string)


class OidcProvider:
    """A real OIDC provider on 127.0.0.1, serving one confidential client."""

    def __init__(self, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self._client = _Client(client_id, client_secret, redirect_uri)
        self._key = RSAKey.generate_key(2048, auto_kid=True)
        self._codes: dict[str, _Code] = {}
        self._tokens: dict[str, _Token] = {}
        self._nonces: set[str] = set()
        self._httpd: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.issuer = ""
        self.discovery_url = ""
        self.current_user: OidcUser | None = None
        self.requests: list[str] = []
        self.app = self._build_app()

    def _build_app(self) -> Flask:
        app = Flask(__name__)
        app.config["OAUTH2_SCOPES_SUPPORTED"] = SCOPES
        server = _Server(self)
        server.init_app(app)
        server.register_grant(_CodeGrant, [_S256Only(), _OpenIDCode(self)])
        protector = ResourceProtector()
        protector.register_token_validator(_Bearer(self))
        server.register_endpoint(_UserInfo(resource_protector=protector))

        @app.before_request
        def record() -> None:
            query = request.query_string.decode()
            self.requests.append(request.path + (f"?{query}" if query else ""))

        @app.get("/.well-known/openid-configuration")
        def discovery() -> Response:
            return jsonify(self._metadata())

        @app.get("/jwks")
        def jwks() -> Response:
            return jsonify({"keys": [self._key.as_dict(private=False, use="sig", alg="RS256")]})

        @app.get("/authorize")
        def authorize() -> Response:
            user = self.current_user
            try:
                grant = server.get_consent_grant(end_user=user)
            except OAuth2Error as error:
                return server.handle_error_response(request, error)
            # Auto-consent; a None user becomes an access_denied redirect.
            return server.create_authorization_response(grant_user=user, grant=grant)

        @app.post("/token")
        def token() -> Response:
            return server.create_token_response()

        @app.route("/userinfo", methods=["GET", "POST"])
        def userinfo() -> Response:
            return server.create_endpoint_response("userinfo")

        return app

    def _metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": SCOPES,
            "claims_supported": [*_CLAIMS, "iss", "aud", "exp", "iat", "auth_time", "nonce"],
        }

    def start(self) -> OidcProvider:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        self._httpd = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.issuer = f"http://127.0.0.1:{self._httpd.server_port}"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        # A short poll interval keeps shutdown() fast between tests.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
