import ssl
from typing import Callable

def request_client_certificate_unverified(context: ssl.SSLContext) -> None: ...
def report_refusals(context: ssl.SSLContext,
                    callback: Callable[[str, str | None, str | None], object]) -> None: ...
def select_by_server_name(default: ssl.SSLContext, by_name: dict[str, ssl.SSLContext]) -> None:
    """Serve a handshake on ``default`` from ``by_name``'s context for the SNI name (exact,
    then "*.parent"); read at each handshake."""
def send_chain_as_loaded(context: ssl.SSLContext) -> None:
    """The certificate chain as loaded: no chain built at each handshake (as nginx)."""
def require_subject_alt_names(context: ssl.SSLContext, names: tuple[str, ...]) -> None: ...

TICKET_KEY_SIZE: int

def set_ticket_keys(keys: list[bytes]) -> None: ...
def use_ticket_keys(context: ssl.SSLContext) -> None: ...
