package chsink

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// col is one column of a table buffer: its values, in row order. The sink
// hands the whole slice to clickhouse-go in one call (a columnar insert),
// which is what makes 100k rows/s cheap.
type col[T any] struct {
	name string
	v    []T
}

func (c *col[T]) add(x T)              { c.v = append(c.v, x) }
func (c *col[T]) colName() string      { return c.name }
func (c *col[T]) values() any          { return c.v }
func (c *col[T]) slice(lo, hi int) any { return c.v[lo:hi] }
func (c *col[T]) reset()               { clear(c.v); c.v = c.v[:0] }
func (c *col[T]) setName(n string)     { c.name = n }

// anyCol is what a table needs of a column, whatever its type.
type anyCol interface {
	colName() string
	values() any
	slice(lo, hi int) any // the values of rows lo..hi-1
	reset()
	setName(string)
}

// table is the buffer of one ClickHouse table: its columns, in the order of
// the INSERT's column list, and the row count.
type table struct {
	name   string // table name, without database
	cols   []anyCol
	rows   int
	srcs   []*kgo.Record // the source record of each row, for rejects
	insert string        // "INSERT INTO db.name (c1, c2, ...)"
}

// newTable binds the columns of cols, a pointer to a struct whose fields are
// col[T] tagged `ch:"column_name"`, into a table. Every field must be such a
// column, so a struct declares a table's columns exactly once.
func newTable(db, name string, cols any) (*table, error) {
	t := &table{name: name}
	v := reflect.ValueOf(cols).Elem()
	names := make([]string, 0, v.NumField())
	for i := range v.NumField() {
		f := v.Type().Field(i)
		c, ok := v.Field(i).Addr().Interface().(anyCol)
		tag := f.Tag.Get("ch")
		if !ok || tag == "" {
			return nil, fmt.Errorf("clickhouse: %s.%s is not a tagged column", v.Type().Name(), f.Name)
		}
		c.setName(tag)
		t.cols = append(t.cols, c)
		names = append(names, tag)
	}
	t.insert = fmt.Sprintf("INSERT INTO %s.%s (%s)", db, name, strings.Join(names, ", "))
	return t, nil
}

func (t *table) reset() {
	for _, c := range t.cols {
		c.reset()
	}
	clear(t.srcs)
	t.srcs = t.srcs[:0]
	t.rows = 0
}
