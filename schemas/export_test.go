package schemas

import (
	"io/fs"
	"reflect"
)

// SchemaFiles is the embedded schema folder, for tests that build another
// release's folder from it.
var SchemaFiles fs.FS = schemaFiles

// RegistryFrom builds a Registry from the schema folder fsys (laid out as
// this package's), the Go type of the current schema file f replaced by the
// type of goTypes[f] (another release's type): a test's stand-in for the
// Registry of an older or newer ams.
func RegistryFrom(fsys fs.FS, goTypes map[string]any) (*Registry, error) {
	types := make(map[string]reflect.Type, len(goTypes))
	for f, v := range goTypes {
		types[f] = reflect.TypeOf(v)
	}
	return buildRegistry(fsys, types)
}
