// The framework recipes, each on a real cluster through the fixture:
// Knex (connectionPool, knex 3.3+), TypeORM (the `driver` option with a
// Pool constructor that hands out our pool), Prisma (@prisma/adapter-pg's
// PrismaPg on our pool, a client generated offline into the temp dir).
//
// The pool under test is the package's createPool() on an agent once the
// package exists (client-lib/node/index.js), with a password rotation
// between two queries; until then a plain pg.Pool, which checks the
// recipes' plumbing.  A framework that is not installed (a devDependency
// of the package) is skipped, saying so.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { writeFile, mkdir, rm } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import pg from 'pg';
import { connectFixture, fixtureSkip, scaled } from './fixture.js';

const require = createRequire(import.meta.url);
const PACKAGE_INDEX = new URL('../../index.js', import.meta.url);
const PACKAGE_DIR = fileURLToPath(new URL('../../', import.meta.url));
const dbswap = existsSync(fileURLToPath(PACKAGE_INDEX)) ? await import(PACKAGE_INDEX.href) : null;
const POOL_KIND = dbswap ? 'createPool' : 'pg.Pool';

async function optional(name) {
  try {
    return await import(name);
  } catch {
    return null;
  }
}
const knexMod = await optional('knex');
const typeorm = await optional('typeorm');
const prismaAdapter = await optional('@prisma/adapter-pg');
const hasPrismaCli = (() => {
  try {
    require.resolve('prisma/package.json');
    require.resolve('@prisma/client/package.json');
    return true;
  } catch {
    return false;
  }
})();

/** Whether this node meets an engines range such as "^20.19 || >=24.0". */
function nodeSatisfies(range) {
  const v = process.versions.node.split('.').map(Number);
  const cmp = (a) => {
    for (let i = 0; i < 3; i++) if ((v[i] ?? 0) !== (a[i] ?? 0)) return (v[i] ?? 0) - (a[i] ?? 0);
    return 0;
  };
  return range.split('||').some((alt) => alt.trim().split(/\s+(?=[\^>=<~])/).every((c) => {
    const m = /^(\^|>=|>|~)?\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(c.trim());
    if (!m) return true;
    const want = [m[2], m[3], m[4]].map((x) => Number(x ?? 0));
    if (m[1] === '^') return v[0] === want[0] && cmp(want) >= 0;
    if (m[1] === '~') return v[0] === want[0] && v[1] === want[1] && cmp(want) >= 0;
    if (m[1] === '>') return cmp(want) > 0;
    return m[1] === '>=' ? cmp(want) >= 0 : cmp(want) === 0;
  }));
}
// The prisma CLI of 7.x does not run on Node 18 (Debian 12's): its
// engines range says so, and generate fails.
const prismaSkip = (() => {
  if (!prismaAdapter || !hasPrismaCli) return '@prisma/adapter-pg, prisma or @prisma/client is not installed (devDependencies of the package)';
  const { version, engines } = require('prisma/package.json');
  if (engines?.node && !nodeSatisfies(engines.node)) return `prisma ${version} needs node ${engines.node}, this is ${process.version}`;
  return false;
})();

const skipFor = (mod, name) => fixtureSkip || (!mod && `${name} is not installed (a devDependency of the package)`);

let fx;
before(async () => {
  if (!fixtureSkip) fx = await connectFixture();
});
after(async () => {
  await fx?.close();
});

/**
 * A role, an env file and an agent (own names per test), and the pool
 * under test on them.  rotate() changes the password (agent and server)
 * and, with createPool, waits until the pool acked; with a plain pg.Pool
 * it does nothing (that pool cannot follow).
 */
async function subject(name, poolOptions = {}) {
  const role = await fx.createRole();
  const env = `${name}.env`;
  await fx.writeEnv({ path: env, vars: { DATABASE_URL: role.url } });
  const agent = await fx.startAgent({ agent: name, envFiles: [env] });
  await fx.waitPublished(1, { agent: name });
  const pool = dbswap
    ? dbswap.createPool({ target: 'DATABASE_URL', socket: agent.socket, max: 4, ...poolOptions })
    : new pg.Pool({ connectionString: role.url, max: 4, ...poolOptions });
  let generation = 1;
  return {
    role: role.role,
    pool,
    async rotate() {
      if (!dbswap) return;
      await fx.rotate(role.role, { path: env });
      generation += 1;
      await fx.waitAcked(generation, { agent: name, subscribers: 1 });
    },
  };
}

test(`knex connectionPool on a ${POOL_KIND}`, { skip: skipFor(knexMod, 'knex') }, async () => {
  const knex = knexMod.default;
  const s = await subject('knex');
  const db = knex({ client: 'pg', connectionPool: s.pool });
  try {
    const r1 = await db.raw('select current_user as u');
    assert.equal(r1.rows[0].u, s.role);
    await s.rotate();
    await db.transaction(async (trx) => {
      const r = await trx.raw('select current_user as u');
      assert.equal(r.rows[0].u, s.role);
    });
  } finally {
    await db.destroy(); // leaves the external pool alone
    await s.pool.end();
  }
});

test(`typeorm driver.Pool handing out a ${POOL_KIND}`, { skip: skipFor(typeorm, 'typeorm') }, async () => {
  const { DataSource } = typeorm;
  const s = await subject('typeorm');
  // TypeORM builds `new driver.Pool(options)`: connection fields from its
  // own options (ignored: the pool has its own) and max = poolSize.  It
  // calls on('error'), connect(callback), end(callback); a thenable would
  // be awaited, so the pool must have no then().
  const driver = {
    ...pg,
    Pool: function DbswapPoolForTypeorm() {
      return s.pool;
    },
  };
  const ds = new DataSource({ type: 'postgres', driver, poolSize: 4 });
  await ds.initialize();
  try {
    const [r1] = await ds.query('select current_user as u');
    assert.equal(r1.u, s.role);
    await s.rotate();
    await ds.transaction(async (m) => {
      const [r] = await m.query('select current_user as u');
      assert.equal(r.u, s.role);
    });
  } finally {
    await ds.destroy(); // ends the pool (end(callback))
  }
});

/**
 * prisma generate (prisma-client-js) into dir, with no engine download.
 * The generator finds @prisma/client from the schema's directory, hence a
 * dir under node_modules (removed after the test).
 */
async function prismaGenerate(dir) {
  await mkdir(dir, { recursive: true });
  const schema = path.join(dir, 'schema.prisma');
  const major = Number(require('prisma/package.json').version.split('.')[0]);
  await writeFile(schema, [
    'generator client {',
    '  provider = "prisma-client-js"',
    `  output   = "${path.join(dir, 'client')}"`,
    major < 7 ? '  engineType = "client"' : '',
    '}',
    'datasource db {',
    '  provider = "postgresql"',
    major < 7 ? '  url = env("DATABASE_URL")' : '',
    '}',
    'model Item {',
    '  id   Int    @id @default(autoincrement())',
    '  name String',
    '}',
    '',
  ].join('\n'));
  const cli = require.resolve('prisma/build/index.js');
  // The CLI downloads the schema engine (and before 7 the query engine
  // library) unless told where they are: any existing file will do, as
  // generate runs neither.
  const env = {
    ...process.env,
    PRISMA_SCHEMA_ENGINE_BINARY: process.execPath,
    PRISMA_QUERY_ENGINE_LIBRARY: process.execPath,
    PRISMA_HIDE_UPDATE_MESSAGE: '1',
    DATABASE_URL: 'postgresql://unused@127.0.0.1:1/unused',
  };
  await new Promise((resolve, reject) => {
    execFile(process.execPath, [cli, 'generate', '--schema', schema],
      { cwd: PACKAGE_DIR, env, timeout: scaled(120000) },
      (err, stdout, stderr) => (err ? reject(new Error(`prisma generate: ${err.message}\n${stdout}${stderr}`)) : resolve()));
  });
  return require(path.join(dir, 'client'));
}

test(`prisma PrismaPg on a ${POOL_KIND}`, { skip: fixtureSkip || prismaSkip }, async (t) => {
  const dir = path.join(PACKAGE_DIR, 'node_modules', '.cache', `dbswap-prisma-${process.pid}`);
  t.after(() => rm(dir, { recursive: true, force: true }));
  const { PrismaClient } = await prismaGenerate(dir);
  const s = await subject('prisma');
  // PrismaPg takes its argument as a pool only if it is an instance of
  // the pg.Pool class of the pg it imports; anything else is taken for a
  // pool config, and queries go to the default server.
  assert.ok(s.pool instanceof pg.Pool,
    'PrismaPg needs a pg.Pool instance: createPool() must return a pg.Pool subclass');
  // No migrations offline (the schema engine is a download): plain SQL.
  await fx.sql(`CREATE TABLE IF NOT EXISTS "Item" (id serial PRIMARY KEY, name text NOT NULL);
    TRUNCATE "Item";
    GRANT ALL ON "Item", "Item_id_seq" TO "${s.role}";`);
  const prisma = new PrismaClient({ adapter: new prismaAdapter.PrismaPg(s.pool) });
  try {
    await prisma.item.create({ data: { name: 'before' } });
    await s.rotate();
    await prisma.$transaction(async (tx) => {
      await tx.item.create({ data: { name: 'after' } });
    });
    assert.equal(await prisma.item.count(), 2);
    const [{ u }] = await prisma.$queryRaw`select current_user::text as u`;
    assert.equal(u, s.role);
  } finally {
    await prisma.$disconnect(); // leaves the external pool alone
    await s.pool.end();
  }
});
