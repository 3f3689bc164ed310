// A real IPFS node for tests: js-ipfs, offline, serving the kubo-compatible RPC API on 127.0.0.1:<port>.
// Usage: node server.mjs <repo dir> <port>; prints "ready" once the API listens.
// Node 20 lacks Promise.withResolvers, which a transitive dependency (it-queue) now uses.
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
const { create } = await import('ipfs-core')
const { HttpApi } = await import('ipfs-http-server')
const [repo, port] = process.argv.slice(2)
const ipfs = await create({
  repo, offline: true, silent: true, init: { emptyRepo: true },
  config: { Addresses: { API: [`/ip4/127.0.0.1/tcp/${port}`], Gateway: [], RPC: [], Swarm: [] }, Bootstrap: [] },
})
const api = new HttpApi(ipfs)
await api.start()
console.log('ready')
