package s3

import "testing"

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		in, want string
		insecure bool
	}{
		{"s3://s3.example.com/bucket-1/store1", "s3://s3.example.com/bucket-1/store1", false},
		{"s3+http://127.0.0.1:8333/pbs/ds_a", "s3+http://127.0.0.1:8333/pbs/ds_a", true},
		{"s3://h:9000/bkt/st/", "s3://h:9000/bkt/st", false},
	} {
		cfg, err := ParseURL(c.in)
		if err != nil || cfg.URL() != c.want || cfg.Insecure != c.insecure || !cfg.PathStyle {
			t.Errorf("ParseURL(%q) = %+v, %v", c.in, cfg, err)
		}
	}
	for _, bad := range []string{
		"", "s3://", "s3://host", "s3://host/bucket", "s3://host/bucket/a/b", "http://host/b/s",
		"s3://host/B/store", "s3://host/ab/store", "s3://host/bucket/../x", "s3://host/bucket/.store",
		"s3://user:pw@host/bucket/store", "s3://%zz/bucket/store",
	} {
		if cfg, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) = %+v, want an error", bad, cfg)
		}
	}
}

func TestChunkName(t *testing.T) {
	const h = "a342e8150000000000000000000000000000000000000000000000000000ffff"
	for rel, want := range map[string]string{
		".chunks/a342/" + h:            h,
		".chunks/a342/" + h + ".3.bad": h + ".3.bad",
		".chunks/a343/" + h:            "",
		".chunks/a342/" + h + ".tmp_x": "",
		".cnt/vm/100/owner":            "",
		".chunks/a342":                 "",
		".chunks/":                     "",
	} {
		if got := ChunkName(rel); got != want {
			t.Errorf("ChunkName(%q) = %q, want %q", rel, got, want)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	f.Add("s3+http://127.0.0.1:8333/pbs/ds")
	f.Fuzz(func(t *testing.T, s string) {
		if cfg, err := ParseURL(s); err == nil {
			if err := cfg.Check(); err != nil {
				t.Fatalf("ParseURL(%q) accepted %+v: %v", s, cfg, err)
			}
		}
	})
}

func TestCleanRel(t *testing.T) {
	for rel, want := range map[string]bool{
		"vm/100/owner": true, "ns/a/vm/1/2026-01-01T00:00:00Z/index.json.blob": true,
		"": false, "/etc/passwd": false, "vm/../../x": false, "vm//x": false, "./x": false, "a\x00b": false,
	} {
		if cleanRel(rel) != want {
			t.Errorf("cleanRel(%q) = %v", rel, !want)
		}
	}
}
