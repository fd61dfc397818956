// The Node.js peers of cadenas, one measurement per run, printed as one JSON line:
//
//   node bench.mjs cycles  PEER TASKS SECONDS   acquire+release cycles/s, TASKS concurrent
//                                              loops on their own keys
//   node bench.mjs handoff PEER SECONDS         release -> blocked waiter holds it, µs
//
// Peers: verrou-memory, verrou-redis, verrou-postgres, verrou-mysql (Verrou with Knex),
// verrou-dynamodb, node-redlock. Connections come from the environment: REDIS_PORTS
// (comma-separated; several = Redlock over several masters), POSTGRES_URL, MYSQL_URL,
// SQL_TABLE (Verrou creates it; the caller drops it; also the DynamoDB table's name),
// DYNAMODB_ENDPOINT. Keys start with a random prefix printed as `prefix`.
import { performance } from 'node:perf_hooks'
import { setImmediate as yieldNow, setTimeout as sleep } from 'node:timers/promises'
import { Verrou } from '@verrou/core'

const [mode, peer, ...rest] = process.argv.slice(2)
const prefix = `cadenas-node-${Math.random().toString(16).slice(2, 10)}-`
const ports = (process.env.REDIS_PORTS ?? '6379').split(',').map(Number)
const TTL = 30_000

// Each peer: { lock(key) -> handle, unlock(handle), wait(key) -> handle (blocking, the peer's
// own polling), poll: its poll period in ms, close() }.
async function open(name) {
  if (name.startsWith('verrou-')) {
    let driver
    let close = async () => {}
    if (name === 'verrou-memory') {
      const { memoryStore } = await import('@verrou/core/drivers/memory')
      driver = memoryStore()
    } else if (name === 'verrou-redis') {
      const { redisStore } = await import('@verrou/core/drivers/redis')
      const { Redis } = await import('ioredis')
      const connection = new Redis({ host: '127.0.0.1', port: ports[0] })
      driver = redisStore({ connection })
      close = async () => { await connection.quit() }
    } else if (name === 'verrou-dynamodb') {
      const { dynamodbStore } = await import('@verrou/core/drivers/dynamodb')
      const { DynamoDBClient } = await import('@aws-sdk/client-dynamodb')
      const connection = new DynamoDBClient({
        endpoint: process.env.DYNAMODB_ENDPOINT, region: 'us-east-1',
        credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
      })
      driver = dynamodbStore({ connection, table: { name: process.env.SQL_TABLE } })
      close = async () => { connection.destroy() }
    } else {
      const { knexStore } = await import('@verrou/core/drivers/knex')
      const { default: knex } = await import('knex')
      const db = name === 'verrou-postgres'
        ? knex({ client: 'pg', connection: process.env.POSTGRES_URL })
        : knex({ client: 'mysql2', connection: process.env.MYSQL_URL })
      driver = knexStore({ connection: db, tableName: process.env.SQL_TABLE })
      close = async () => { await db.destroy() }
    }
    const verrou = new Verrou({ default: 'store', stores: { store: { driver } } })
    if (name === 'verrou-dynamodb') {
      // Verrou creates its table when the store is built, without waiting for it to become
      // active: wait until a read of it succeeds.
      for (const until = performance.now() + 30_000; ;) {
        try { await verrou.createLock(`${prefix}warmup`).isLocked(); break } catch (e) {
          if (performance.now() > until) throw e
          await sleep(50)
        }
      }
    }
    return {
      poll: 250, // Verrou's default retry delay
      async lock(key) {
        const lock = verrou.createLock(key, TTL)
        if (!(await lock.acquireImmediately())) throw new Error(`${key} is held`)
        return lock
      },
      async wait(key) {
        const lock = verrou.createLock(key, TTL)
        if (!(await lock.acquire())) throw new Error(`${key} not acquired`)
        return lock
      },
      unlock: (lock) => lock.release(),
      close,
    }
  }
  if (name === 'node-redlock') {
    const { default: Redlock } = await import('redlock')
    const { Redis } = await import('ioredis')
    const clients = ports.map((port) => new Redis({ host: '127.0.0.1', port }))
    const once = new Redlock(clients, { retryCount: 0 })
    const waiting = new Redlock(clients) // its defaults: 10 tries, 200 ms ± 100 ms apart
    return {
      poll: 200,
      lock: (key) => once.lock(key, TTL),
      wait: (key) => waiting.lock(key, TTL),
      unlock: (lock) => lock.unlock(),
      close: async () => { await Promise.all(clients.map((c) => c.quit())) },
    }
  }
  throw new Error(`unknown peer ${name}`)
}

async function cycles(p, tasks, seconds) {
  let done = 0
  let stop = false
  const loop = async (t) => {
    for (let n = 0; !stop; n++) {
      const h = await p.lock(`${prefix}${t}-${n % 1000}`)
      await p.unlock(h)
      done++
      // An in-memory store never leaves the microtask queue: let the timer run.
      if (n % 128 === 127) await yieldNow()
    }
  }
  // The first lock may create the store's table.
  await p.unlock(await p.lock(`${prefix}warmup`))
  const started = performance.now()
  const loops = Array.from({ length: tasks }, (_, t) => loop(t))
  await sleep(seconds * 1000)
  stop = true
  const counted = done
  const secs = (performance.now() - started) / 1000
  await Promise.all(loops)
  return counted / secs
}

async function handoff(p, seconds) {
  const key = `${prefix}handoff`
  const samples = []
  const until = performance.now() + seconds * 1000
  while (performance.now() < until || samples.length < 5) {
    const held = await p.lock(key)
    let gotAt
    const waiter = p.wait(key).then((h) => { gotAt = performance.now(); return h })
    // The waiter finds the lock held at a random point of its poll period.
    await sleep(2 + Math.random() * p.poll)
    const releasedAt = performance.now()
    await p.unlock(held)
    await p.unlock(await waiter)
    samples.push((gotAt - releasedAt) * 1000)
  }
  return samples.sort((a, b) => a - b)
}

const p = await open(peer)
let out
if (mode === 'cycles') {
  const [tasks, seconds] = rest.map(Number)
  out = { peer, tasks, cycles_per_sec: await cycles(p, tasks, seconds), prefix }
} else if (mode === 'handoff') {
  out = { peer, handoff_us: await handoff(p, Number(rest[0])), prefix }
} else {
  throw new Error('usage: node bench.mjs cycles PEER TASKS SECONDS | handoff PEER SECONDS')
}
await p.close()
console.log(JSON.stringify(out))
