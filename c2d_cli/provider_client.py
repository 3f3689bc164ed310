"""A consumer's client of an Ocean Provider's compute API, as ocean.py and ocean.js speak it.

Discovers the routes from `GET /` (`serviceEndpoints`), fetches a fresh nonce before each signed call
and signs EIP-191 over keccak(message + nonce), exactly like Ocean's own clients (the messages:
c2d_core/ocean/signing.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from c2d_core.ocean.signing import (
    compute_result_message,
    compute_start_message,
    compute_stop_message,
    compute_streamable_logs_message,
    download_message,
    sign_request,
)


class ProviderError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"Provider answered {status}: {body}")
        self.status = status
        self.body = body


class ProviderClient:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)
        self._endpoints: dict[str, tuple[str, str]] | None = None

    def close(self) -> None:
        self._http.close()

    def root(self) -> dict[str, Any]:
        return self._json(self._http.get(f"{self.url}/"))

    def _endpoint(self, name: str) -> tuple[str, str]:
        if self._endpoints is None:
            self._endpoints = {
                key: (value[0], value[1]) for key, value in self.root()["serviceEndpoints"].items()
            }
        return self._endpoints[name]

    def _call(self, name: str, **kwargs: Any) -> httpx.Response:
        method, path = self._endpoint(name)
        return self._http.request(method, f"{self.url}{path}", **kwargs)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ProviderError(response.status_code, body)
        return body

    def nonce(self, address: str) -> int:
        value = self._json(self._call("nonce", params={"userAddress": address}))["nonce"]
        return int(float(value))

    def _next_nonce(self, address: str) -> str:
        return str(self.nonce(address) + 1)

    def environments(self, chain_id: int) -> list[dict[str, Any]]:
        return list(
            self._json(self._call("computeEnvironments", params={"chainId": chain_id}))[str(chain_id)]
        )

    def fileinfo(self, body: dict[str, Any], timeout: float = 120.0) -> list[dict[str, Any]]:
        """Whether files are reachable from the Provider: one URL file object, or `{did, serviceId}` for
        every file of a published service (the Provider decrypts them; no location comes back)."""
        return list(self._json(self._call("fileinfo", json=body, timeout=timeout)))

    def encrypt(self, data: bytes, chain_id: int) -> str:
        response = self._call(
            "encrypt",
            params={"chainId": chain_id},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if response.status_code != 201:
            raise ProviderError(response.status_code, response.text)
        return response.text

    def initialize_compute(
        self,
        datasets: list[dict[str, Any]],
        algorithm: dict[str, Any],
        env_id: str,
        valid_until: int,
        consumer: str,
    ) -> dict[str, Any]:
        body = {
            "datasets": datasets,
            "algorithm": algorithm,
            "compute": {"env": env_id, "validUntil": valid_until},
            "consumerAddress": consumer,
        }
        return dict(self._json(self._call("initializeCompute", json=body)))

    def start(
        self,
        account: LocalAccount,
        dataset: dict[str, Any],
        algorithm: dict[str, Any],
        env_id: str,
        additional: list[dict[str, Any]] | None = None,
        output: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        nonce = self._next_nonce(account.address)
        body = {
            "consumerAddress": account.address,
            "signature": sign_request(
                account, compute_start_message(account.address, dataset["documentId"]), nonce
            ),
            "nonce": int(nonce),
            "environment": env_id,
            "dataset": dataset,
            "algorithm": algorithm,
            "additionalDatasets": additional or [],
            # Ocean's output object: publish the results as a new asset (omitted: nothing published).
            **({"output": output} if output is not None else {}),
        }
        return list(self._json(self._call("computeStart", json=body)))

    def status(self, consumer: str, job_id: str | None = None) -> list[dict[str, Any]]:
        params = {"consumerAddress": consumer, **({"jobId": job_id} if job_id else {})}
        return list(self._json(self._call("computeStatus", params=params)))

    def stop(self, account: LocalAccount, job_id: str, document_id: str = "") -> list[dict[str, Any]]:
        nonce = self._next_nonce(account.address)
        params = {
            "consumerAddress": account.address,
            "jobId": job_id,
            "documentId": document_id,
            "nonce": nonce,
            "signature": sign_request(
                account, compute_stop_message(account.address, job_id, document_id), nonce
            ),
        }
        return list(self._json(self._call("computeStop", params=params)))

    def result(
        self, account: LocalAccount, job_id: str, index: int, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        nonce = self._next_nonce(account.address)
        params = {
            "consumerAddress": account.address,
            "jobId": job_id,
            "index": str(index),
            "nonce": nonce,
            "signature": sign_request(account, compute_result_message(account.address, job_id, index), nonce),
        }
        return self._call("computeResult", params=params, headers=headers or {})

    def stream_logs(self, account: LocalAccount, job_id: str) -> Iterator[bytes]:
        """The job's algorithm log as the Provider streams it (computeStreamableLogs): chunks as the
        algorithm writes them, ending when the job ends. ProviderError for a refusal (404 for a job
        that is not this account's)."""
        nonce = self._next_nonce(account.address)
        message = compute_streamable_logs_message(account.address, job_id)
        params = {
            "consumerAddress": account.address,
            "jobId": job_id,
            "nonce": nonce,
            "signature": sign_request(account, message, nonce),
        }
        method, path = self._endpoint("computeStreamableLogs")
        # No read timeout: the stream is quiet while the algorithm is.
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        with self._http.stream(method, f"{self.url}{path}", params=params, timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            yield from response.iter_bytes()

    def initialize(
        self,
        did: str,
        service_id: str,
        consumer: str,
        *,
        file_index: int | None = None,
        transfer_tx_id: str | None = None,
    ) -> dict[str, Any]:
        """Before ordering an access service: `{datatoken, nonce, providerFee}`, or `{validOrder}`."""
        params: dict[str, Any] = {"documentId": did, "serviceId": service_id, "consumerAddress": consumer}
        if file_index is not None:
            params["fileIndex"] = str(file_index)
        if transfer_tx_id:
            params["transferTxId"] = transfer_tx_id
        return dict(self._json(self._call("initialize", params=params)))

    def download(
        self,
        account: LocalAccount,
        did: str,
        service_id: str,
        transfer_tx_id: str,
        file_index: int,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One file of an ordered access service, signed over documentId + nonce as Ocean's clients do."""
        nonce = self._next_nonce(account.address)
        params = {
            "documentId": did,
            "serviceId": service_id,
            "transferTxId": transfer_tx_id,
            "fileIndex": str(file_index),
            "consumerAddress": account.address,
            "nonce": nonce,
            "signature": sign_request(account, download_message(did), nonce),
        }
        return self._call("download", params=params, headers=headers or {})
