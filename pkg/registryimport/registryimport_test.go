package registryimport

import (
	"reflect"
	"strings"
	"testing"
)

func readAll(t *testing.T, in string, f Format) ([]Row, []Refusal) {
	t.Helper()
	var rows []Row
	var refused []Refusal
	if err := Read(strings.NewReader(in), f, func(r Row) { rows = append(rows, r) }, func(r Refusal) { refused = append(refused, r) }); err != nil {
		t.Fatal(err)
	}
	return rows, refused
}

func TestReadCSV(t *testing.T) {
	in := "name,sn,token,bound,extra\n" +
		"Gate,0505050505000001,device-token-0001,1,x\n" +
		"\"Lobby, east\",0505050505000002,device-token-0002,false,\n" +
		"Bad sn,05 05,device-token-0003,1,\n" +
		"No token,0505050505000004,,1,\n" +
		"Bad bound,0505050505000005,device-token-0005,maybe,\n" +
		"Again,0505050505000001,device-token-0001,1,\n" +
		"Short,0505050505000007,device-token-0007\n"
	rows, refused := readAll(t, in, CSV)
	want := []Row{
		{Line: 2, SN: "0505050505000001", Token: "device-token-0001", Bound: true, Name: "Gate"},
		{Line: 3, SN: "0505050505000002", Token: "device-token-0002", Bound: false, Name: "Lobby, east"},
		{Line: 8, SN: "0505050505000007", Token: "device-token-0007", Name: "Short"}, // no bound column: false
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows:\n got %+v\nwant %+v", rows, want)
	}
	wantLines := map[int]string{4: "not a valid serial number", 5: "token must be", 6: "not a boolean", 7: "duplicate sn (first on line 2)"}
	if len(refused) != len(wantLines) {
		t.Fatalf("refused %+v, want lines %v", refused, wantLines)
	}
	for _, r := range refused {
		if !strings.Contains(r.Reason, wantLines[r.Line]) || wantLines[r.Line] == "" {
			t.Errorf("refused line %d: %q, want it to say %q", r.Line, r.Reason, wantLines[r.Line])
		}
	}
}

func TestReadCSVNeedsHeader(t *testing.T) {
	err := Read(strings.NewReader("0505050505000001,device-token-0001,1,Gate\n"), CSV, func(Row) {}, func(Refusal) {})
	if err == nil || !strings.Contains(err.Error(), `no "sn" column`) {
		t.Errorf("a CSV without a header: %v", err)
	}
}

func TestReadJSONLines(t *testing.T) {
	in := `{"sn":"0505050505000001","token":"device-token-0001","bound":true,"name":"Gate"}
{"sn":"0505050505000002","token":"device-token-0002","bound":0}

{"sn":"0505050505000003","token":"device-token-0003","bound":"yes","name":"` + strings.Repeat("x", 65) + `"}
{"sn":"0505050505000004","token":"device-token-0004","colour":"red"}
not json
{"sn":"0505050505000006","token":"device-token-0006","bound":[1]}
`
	rows, refused := readAll(t, in, JSONLines)
	want := []Row{
		{Line: 1, SN: "0505050505000001", Token: "device-token-0001", Bound: true, Name: "Gate"},
		{Line: 2, SN: "0505050505000002", Token: "device-token-0002"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows:\n got %+v\nwant %+v", rows, want)
	}
	wantLines := map[int]string{4: "name must be", 5: "unknown field", 6: "json:", 7: "not a boolean"}
	if len(refused) != len(wantLines) {
		t.Fatalf("refused %+v, want lines %v", refused, wantLines)
	}
	for _, r := range refused {
		if !strings.Contains(r.Reason, wantLines[r.Line]) || wantLines[r.Line] == "" {
			t.Errorf("refused line %d: %q, want it to say %q", r.Line, r.Reason, wantLines[r.Line])
		}
	}
}

func TestTokenNeverInRefusals(t *testing.T) {
	_, refused := readAll(t, "sn,token\nbad sn,secret-token-1\n", CSV)
	for _, r := range refused {
		if strings.Contains(r.Reason, "secret-token-1") {
			t.Errorf("a refusal shows the token: %q", r.Reason)
		}
	}
}
