package chsink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ivms/ams/sinks/chsink/migrations"
)

// Migration is one numbered file of sinks/chsink/migrations.
type Migration struct {
	Version    uint32
	Name       string   // file name without the version and .sql, e.g. "tables"
	Statements []string // with {db} still in them
	// MinVersion, when set, is the oldest ClickHouse release the migration
	// runs on (its first line is "-- requires ClickHouse >= 20.3"). On an
	// older server it is skipped and not recorded, so `ams migrate` applies
	// it after the server is upgraded.
	MinVersion string
}

var requiresLine = regexp.MustCompile(`(?m)^-- requires ClickHouse >= ([0-9]+(?:\.[0-9]+)*)\s*$`)

// AppliesTo reports whether m runs on a server of the given version
// ("18.16.1", "26.9.0").
func (m Migration) AppliesTo(serverVersion string) bool {
	return m.MinVersion == "" || compareVersions(serverVersion, m.MinVersion) >= 0
}

// compareVersions compares dotted release numbers numerically ("18.16.1" < "20.3").
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// MigrationStatements returns every statement `ams migrate` runs on an empty
// server of the given version for database db, in order: the database, the
// ledger, then each applicable migration (the ledger's rows are not included).
func MigrationStatements(db, serverVersion string) ([]string, error) {
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	out := []string{"CREATE DATABASE IF NOT EXISTS " + db, fmt.Sprintf(ledgerDDL, db)}
	for _, m := range all {
		if !m.AppliesTo(serverVersion) {
			continue
		}
		for _, s := range m.Statements {
			out = append(out, strings.ReplaceAll(s, "{db}", db))
		}
	}
	return out, nil
}

// ErrNotMigrated is returned (wrapped) when the database lacks a migration
// this build knows: run `ams migrate`.
var ErrNotMigrated = errors.New("clickhouse schema is not migrated")

var migrationFile = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Migrations returns the embedded migrations in version order. It fails on a
// misnamed file, a repeated version or an empty migration.
func Migrations() ([]Migration, error) {
	return parseMigrations(migrations.Files)
}

func parseMigrations(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var out []Migration
	for _, n := range names {
		m := migrationFile.FindStringSubmatch(n)
		if m == nil {
			return nil, fmt.Errorf("migration %s: name is not NNNN_name.sql", n)
		}
		v, _ := strconv.ParseUint(m[1], 10, 32)
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", n, err)
		}
		stmts := SplitStatements(string(b))
		if len(stmts) == 0 {
			return nil, fmt.Errorf("migration %s has no statement", n)
		}
		mig := Migration{Version: uint32(v), Name: m[2], Statements: stmts}
		if r := requiresLine.FindStringSubmatch(string(b)); r != nil {
			mig.MinVersion = r[1]
		}
		out = append(out, mig)
	}
	slices.SortFunc(out, func(a, b Migration) int { return int(a.Version) - int(b.Version) })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", out[i-1].Name, out[i].Name, out[i].Version)
		}
	}
	return out, nil
}

// SplitStatements splits a migration into statements at lines holding only
// ";" and drops "--" comment lines and blank statements.
func SplitStatements(sql string) []string {
	var out []string
	var cur []string
	flush := func() {
		if s := strings.TrimSpace(strings.Join(cur, "\n")); s != "" {
			out = append(out, s)
		}
		cur = cur[:0]
	}
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		switch {
		case t == ";":
			flush()
		case strings.HasPrefix(t, "--"):
		default:
			cur = append(cur, line)
		}
	}
	flush()
	return out
}

// Options say how to reach ClickHouse (native protocol).
type Options struct {
	Addr     []string // host:port, native protocol
	Database string   // the ams database, e.g. "ams"
	Username string   // default "default"
	Password string
	// TLS, when set, connects with TLS (to the server's secure native port).
	TLS *tls.Config
	// Cluster, when set, names the ClickHouse cluster the tables were
	// migrated for (MigrateCluster): inserts into its Distributed tables
	// return only once written to a replica of each shard
	// (insert_distributed_sync), not when queued on the node reached.
	Cluster string
}

// Open connects to ClickHouse and pings it. The connection's current
// database is "default" (the ams database may not exist yet); ams qualifies
// every table with Options.Database.
func Open(ctx context.Context, o Options) (driver.Conn, error) {
	if !identifier.MatchString(o.Database) {
		return nil, fmt.Errorf("clickhouse database %q: want letters, digits and underscores", o.Database)
	}
	user := o.Username
	if user == "" {
		user = "default"
	}
	var settings clickhouse.Settings
	if o.Cluster != "" {
		settings = clickhouse.Settings{"insert_distributed_sync": 1}
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Settings:     settings,
		Addr:         o.Addr,
		Protocol:     clickhouse.Native,
		Auth:         clickhouse.Auth{Database: "default", Username: user, Password: o.Password},
		TLS:          o.TLS,
		DialTimeout:  3 * time.Second,
		ReadTimeout:  60 * time.Second,
		MaxOpenConns: 8,
		MaxIdleConns: 4,
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %v: %w", o.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("clickhouse %v: %w", o.Addr, err)
	}
	return conn, nil
}

const ledgerDDL = "CREATE TABLE IF NOT EXISTS %s.schema_migrations (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version"

// Migrate creates the database and the migration ledger if missing, then
// applies, in order, every migration the ledger does not list, recording
// each after all its statements ran. It returns the migrations it applied
// (none when the database is up to date). A migration that fails half way is
// not recorded; as every statement is idempotent, the next run repeats it.
// Two Migrate calls at once may both run a migration (harmless, for the
// same reason) and record it twice (read as one).
func Migrate(ctx context.Context, conn driver.Conn, db string, log *slog.Logger) ([]Migration, error) {
	return migrate(ctx, conn, db, "", log)
}

// MigrateCluster is Migrate for the ClickHouse cluster named cluster (in the
// servers' remote_servers, with ZooKeeper, <distributed_ddl> and the macros
// shard and replica): every statement is rewritten by ClusterStatements and
// runs ON CLUSTER, so conn may reach any node, and migrating again through
// any node applies nothing twice (the ledger is replicated).
func MigrateCluster(ctx context.Context, conn driver.Conn, db, cluster string, log *slog.Logger) ([]Migration, error) {
	if cluster == "" {
		return nil, errors.New("clickhouse cluster: empty name")
	}
	return migrate(ctx, conn, db, cluster, log)
}

func migrate(ctx context.Context, conn driver.Conn, db, cluster string, log *slog.Logger) ([]Migration, error) {
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	createDB, ledger := "CREATE DATABASE IF NOT EXISTS "+db, fmt.Sprintf(ledgerDDL, db)
	stmts := make([][]string, len(all))
	for i, m := range all {
		stmts[i] = m.Statements
	}
	if cluster != "" {
		if stmts, err = ClusterStatements(all, cluster); err != nil {
			return nil, err
		}
		createDB, ledger = createDB+" ON CLUSTER "+cluster, fmt.Sprintf(clusterLedgerDDL, db, cluster)
	}
	if err := conn.Exec(ctx, createDB); err != nil {
		return nil, fmt.Errorf("create database %s: %w", db, err)
	}
	if err := conn.Exec(ctx, ledger); err != nil {
		return nil, fmt.Errorf("create %s.schema_migrations: %w", db, err)
	}
	done, err := appliedVersions(ctx, conn, db)
	if err != nil {
		return nil, err
	}
	version, err := ServerVersion(ctx, conn)
	if err != nil {
		return nil, err
	}
	var applied []Migration
	for k, m := range all {
		if done[m.Version] {
			continue
		}
		if !m.AppliesTo(version) {
			log.Info("clickhouse migration skipped: the server is older than it needs", "database", db,
				"version", m.Version, "name", m.Name, "server", version, "needs", m.MinVersion)
			continue
		}
		for i, s := range stmts[k] {
			if err := conn.Exec(ctx, strings.ReplaceAll(s, "{db}", db)); err != nil {
				return applied, fmt.Errorf("migration %04d_%s statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		if err := record(ctx, conn, db, m); err != nil {
			return applied, fmt.Errorf("record migration %04d_%s: %w", m.Version, m.Name, err)
		}
		log.Info("clickhouse migration applied", "database", db, "version", m.Version, "name", m.Name)
		applied = append(applied, m)
	}
	return applied, nil
}

// record adds m to the ledger. (An INSERT ... VALUES through Exec hangs
// against ClickHouse 18.16 with clickhouse-go v2.51; a batch works.)
func record(ctx context.Context, conn driver.Conn, db string, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(m.Version, m.Name, time.Now().UTC()); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}

func appliedVersions(ctx context.Context, conn driver.Conn, db string) (map[uint32]bool, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM "+db+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read %s.schema_migrations: %w", db, err)
	}
	defer rows.Close()
	done := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read %s.schema_migrations: %w", db, err)
		}
		done[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s.schema_migrations: %w", db, err)
	}
	return done, nil
}

// CheckMigrated returns an error wrapping ErrNotMigrated unless every
// embedded migration is recorded in db's ledger.
func CheckMigrated(ctx context.Context, conn driver.Conn, db string) error {
	all, err := Migrations()
	if err != nil {
		return err
	}
	var exists uint8
	if err := conn.QueryRow(ctx, "SELECT count() > 0 FROM system.tables WHERE database = ? AND name = 'schema_migrations'", db).Scan(&exists); err != nil {
		return fmt.Errorf("look for %s.schema_migrations: %w", db, err)
	}
	if exists == 0 {
		return fmt.Errorf("%w: database %s has no schema_migrations table (run `ams migrate`)", ErrNotMigrated, db)
	}
	done, err := appliedVersions(ctx, conn, db)
	if err != nil {
		return err
	}
	version, err := ServerVersion(ctx, conn)
	if err != nil {
		return err
	}
	for _, m := range all {
		if !done[m.Version] && m.AppliesTo(version) {
			return fmt.Errorf("%w: database %s lacks migration %04d_%s (run `ams migrate`)", ErrNotMigrated, db, m.Version, m.Name)
		}
	}
	return nil
}

// ServerVersion returns the server's release, e.g. "18.16.1".
func ServerVersion(ctx context.Context, conn driver.Conn) (string, error) {
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return "", fmt.Errorf("clickhouse version: %w", err)
	}
	return v, nil
}
