package dbswap

// libpq connection strings: parsing by libpq's rules (fe-connect.c), and
// masking. A connection string holds a password: nothing here puts a value
// from it into an error message. MaskConninfo is the form to log; Redact
// cleans text from elsewhere (a driver's error) that may quote one.
//
// The rules are those of the agent's masker (common/mask.c) and of the
// Node.js package (client-lib/node/src/conninfo.js), case for case: a
// setting whose value libpq would not take is masked too, since a mistyped
// value can put a password anywhere ("port=${DB_PASS}").

import (
	"net"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"
)

const mask = "****"

// secretKeys are the keywords whose value is a secret.
var secretKeys = map[string]bool{"password": true, "sslpassword": true, "oauth_client_secret": true,
	"scram_client_key": true, "scram_server_key": true}

// keywords are those libpq knows (up to PostgreSQL 18).
var keywords = map[string]bool{}

func init() {
	for _, k := range strings.Fields(`host hostaddr port dbname user password passfile require_auth
		channel_binding connect_timeout client_encoding options application_name
		fallback_application_name keepalives keepalives_idle keepalives_interval keepalives_count
		tcp_user_timeout replication gssencmode sslmode requiressl sslnegotiation sslcompression
		sslcert sslkey sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni requirepeer
		ssl_min_protocol_version ssl_max_protocol_version min_protocol_version max_protocol_version
		krbsrvname gsslib gssdelegation service target_session_attrs load_balance_hosts
		sslkeylogfile scram_client_key scram_server_key oauth_issuer oauth_client_id
		oauth_client_secret oauth_scope`) {
		keywords[k] = true
	}
}

var uriSchemes = []string{"postgresql://", "postgres://"}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// conninfoError is a connection string that cannot be read; its text
// quotes nothing of it.
func conninfoError(msg string) error {
	return &Error{Code: CodeConninfo, Message: "connection string: " + msg}
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// uriDecode is libpq's %XX decoding of URI parts (no '+' for a blank).
func uriDecode(s, where string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", conninfoError("invalid percent-encoded token in the " + where)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", conninfoError("invalid percent-encoded token in the " + where)
		}
		if hi == 0 && lo == 0 {
			return "", conninfoError("forbidden value %00 in the " + where)
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	if !utf8.ValidString(b.String()) {
		return "", conninfoError("the " + where + " is not valid UTF-8 once percent-decoded")
	}
	return b.String(), nil
}

func store(params map[string]string, keyword, value string, where string) error {
	if !keywords[keyword] {
		// An unknown word may be a misplaced secret: never quoted.
		if where != "" {
			return conninfoError("invalid connection option " + where)
		}
		return conninfoError("invalid connection option")
	}
	if keyword == "requiressl" {
		// libpq stores the deprecated requiressl as sslmode.
		if strings.HasPrefix(value, "1") {
			params["sslmode"] = "require"
		} else {
			params["sslmode"] = "prefer"
		}
		return nil
	}
	params[keyword] = value
	return nil
}

func parseURI(s string, schemeLen int) (map[string]string, error) {
	params := map[string]string{}
	p := schemeLen
	// User info: up to the first '@' before any '/' (a '?' does not stop it).
	q := p
	for q < len(s) && s[q] != '@' && s[q] != '/' {
		q++
	}
	if q < len(s) && s[q] == '@' {
		info := s[p:q]
		user, pw, hasPw := strings.Cut(info, ":")
		if user != "" {
			v, err := uriDecode(user, "user name")
			if err != nil {
				return nil, err
			}
			store(params, "user", v, "")
		}
		if hasPw && pw != "" {
			v, err := uriDecode(pw, "password")
			if err != nil {
				return nil, err
			}
			store(params, "password", v, "")
		}
		p = q + 1
	}
	// netloc[:port] pairs, separated by commas.
	var hosts, ports []string
	var term byte
	at := func(i int) byte {
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	for {
		var host string
		if at(p) == '[' {
			end := strings.IndexByte(s[p:], ']')
			if end < 0 {
				return nil, conninfoError(`no "]" closes an IPv6 host address`)
			}
			end += p
			if end == p+1 {
				return nil, conninfoError("empty IPv6 host address")
			}
			host = s[p+1 : end]
			p = end + 1
			if p < len(s) && !strings.ContainsRune(":/?,", rune(s[p])) {
				return nil, conninfoError(`unexpected character after an IPv6 address (expected ":" or "/")`)
			}
		} else {
			start := p
			for p < len(s) && !strings.ContainsRune(":/?,", rune(s[p])) {
				p++
			}
			host = s[start:p]
		}
		hosts = append(hosts, host)
		term = at(p)
		port := ""
		if term == ':' {
			p++
			start := p
			for p < len(s) && !strings.ContainsRune("/?,", rune(s[p])) {
				p++
			}
			port = s[start:p]
			term = at(p)
		}
		ports = append(ports, port)
		if term != ',' {
			break
		}
		p++
	}
	if h := strings.Join(hosts, ","); h != "" {
		v, err := uriDecode(h, "host")
		if err != nil {
			return nil, err
		}
		store(params, "host", v, "")
	}
	if pt := strings.Join(ports, ","); pt != "" {
		v, err := uriDecode(pt, "port")
		if err != nil {
			return nil, err
		}
		store(params, "port", v, "")
	}
	if term == '/' {
		p++
		start := p
		for p < len(s) && s[p] != '?' {
			p++
		}
		if db := s[start:p]; db != "" {
			v, err := uriDecode(db, "database name")
			if err != nil {
				return nil, err
			}
			store(params, "dbname", v, "")
		}
		term = at(p)
	}
	if term == '?' {
		rest := s[p+1:]
		for rest != "" {
			pair, tail, more := strings.Cut(rest, "&")
			k, v, ok := strings.Cut(pair, "=")
			if !ok {
				return nil, conninfoError(`missing "=" in a URI query parameter`)
			}
			if strings.Contains(v, "=") {
				return nil, conninfoError(`extra "=" in a URI query parameter`)
			}
			key, err := uriDecode(k, "query")
			if err != nil {
				return nil, err
			}
			where := "query"
			if keywords[key] {
				where = key + " query parameter"
			}
			value, err := uriDecode(v, where)
			if err != nil {
				return nil, err
			}
			if key == "ssl" && value == "true" { // libpq's JDBC compatibility
				key, value = "sslmode", "require"
			}
			if err := store(params, key, value, "in the URI query"); err != nil {
				return nil, err
			}
			if !more {
				break
			}
			rest = tail
		}
	}
	return params, nil
}

func parseKeyValue(s string) (map[string]string, error) {
	params := map[string]string{}
	p, n := 0, len(s)
	for {
		for p < n && isSpace(s[p]) {
			p++
		}
		if p >= n {
			break
		}
		start := p
		for p < n && s[p] != '=' && !isSpace(s[p]) {
			p++
		}
		keyword := s[start:p]
		for p < n && isSpace(s[p]) {
			p++
		}
		if p >= n || s[p] != '=' {
			if keywords[keyword] {
				return nil, conninfoError(`missing "=" after "` + keyword + `"`)
			}
			return nil, conninfoError(`missing "=" after a word`)
		}
		p++
		for p < n && isSpace(s[p]) {
			p++
		}
		var v strings.Builder
		if p >= n || s[p] != '\'' {
			for p < n && !isSpace(s[p]) {
				if s[p] == '\\' {
					p++
				}
				if p < n {
					v.WriteByte(s[p])
					p++
				}
			}
		} else {
			p++
			for {
				if p >= n {
					return nil, conninfoError("unterminated quoted string")
				}
				if s[p] == '\\' {
					p++
					if p < n {
						v.WriteByte(s[p])
						p++
					}
					continue
				}
				if s[p] == '\'' {
					p++
					break
				}
				v.WriteByte(s[p])
				p++
			}
		}
		if err := store(params, keyword, v.String(), ""); err != nil {
			return nil, err
		}
	}
	return params, nil
}

// ParseConninfo parses a libpq connection string (URI or keyword/value)
// by libpq's rules into keyword -> value. Its errors (code "conninfo")
// quote no value.
func ParseConninfo(conninfo string) (map[string]string, error) {
	for _, scheme := range uriSchemes {
		if strings.HasPrefix(conninfo, scheme) {
			return parseURI(conninfo, len(scheme))
		}
	}
	return parseKeyValue(conninfo)
}

/* ---- masking ---- */

func isSecretKey(k string) bool { return secretKeys[strings.ToLower(k)] }

var pctRE = regexp.MustCompile(`%[0-9a-fA-F]{2}`)

// percentDecodeLoose: %XX decoded; a '%' that starts no escape stays (the
// masker reads what libpq would, and never fails).
func percentDecodeLoose(s string) string {
	return pctRE.ReplaceAllStringFunc(s, func(h string) string {
		hi, _ := unhex(h[1])
		lo, _ := unhex(h[2])
		return string([]byte{hi<<4 | lo})
	})
}

// dbnameExpands: libpq expands a dbname holding '=' or starting with a URI
// scheme as a connection string of its own, password and all; "://"
// anywhere also catches what a human reads as a URI.
func dbnameExpands(decoded string) bool {
	return strings.Contains(decoded, "=") || strings.Contains(decoded, "://")
}

var kvEscRE = regexp.MustCompile(`(?s)\\(.)`)

// kvDecode: a dbname as written in key=value form, without quotes and
// escapes.
func kvDecode(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		v = v[1 : len(v)-1]
	}
	return kvEscRE.ReplaceAllString(v, "$1")
}

var intSettings = map[string]bool{"connect_timeout": true, "keepalives": true, "keepalives_idle": true,
	"keepalives_interval": true, "keepalives_count": true, "tcp_user_timeout": true}
var flagSettings = map[string]bool{"sslcompression": true, "sslsni": true, "gssdelegation": true, "requiressl": true}

var portRE = regexp.MustCompile(`^[1-9][0-9]{0,4}$`)
var digitsRE = regexp.MustCompile(`^[0-9]*$`)
var intRE = regexp.MustCompile(`^[+-]?(0|[1-9][0-9]*)$`)

func portOk(p string) bool {
	if p == "" {
		return true
	}
	if !portRE.MatchString(p) {
		return false
	}
	n := 0
	for _, c := range p {
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}

// numberOk: whether a value is one the setting takes, for settings that
// take a number or an address; ok false: the setting is not one of those.
func numberOk(key, value string) (good, ok bool) {
	switch {
	case key == "port":
		for _, p := range strings.Split(value, ",") {
			if !portOk(p) {
				return false, true
			}
		}
		return true, true
	case key == "hostaddr":
		for _, a := range strings.Split(value, ",") {
			if a != "" && net.ParseIP(a) == nil {
				return false, true
			}
		}
		return true, true
	case flagSettings[key]:
		return digitsRE.MatchString(value), true
	case !intSettings[key]:
		return false, false
	case value == "":
		return true, true
	}
	if !intRE.MatchString(value) {
		return false, true
	}
	digits := strings.TrimLeft(value, "+-")
	if len(digits) > 10 {
		return false, true
	}
	n := int64(0)
	for _, c := range digits {
		n = n*10 + int64(c-'0')
	}
	return n <= 2147483647, true
}

var enumSettings = map[string][]string{
	"sslmode":                  {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"},
	"gssencmode":               {"disable", "prefer", "require"},
	"channel_binding":          {"disable", "prefer", "require"},
	"target_session_attrs":     {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"},
	"ssl_min_protocol_version": {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"},
	"ssl_max_protocol_version": {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"},
	"sslnegotiation":           {"postgres", "direct"},
	"sslcertmode":              {"disable", "allow", "require"},
	"load_balance_hosts":       {"disable", "random"},
	"gsslib":                   {"gssapi", "sspi"},
	"min_protocol_version":     {"3.0", "3.2", "latest"},
	"max_protocol_version":     {"3.0", "3.2", "latest"},
}

// settingOk: whether a setting's value as written is one libpq takes for
// it (common/mask.c's setting_ok()). uri: percent-encoded, else key=value
// text.
func settingOk(key, written string, uri bool) bool {
	if key == "dbname" {
		if uri {
			return valueOk(key, percentDecodeLoose(written))
		}
		return valueOk(key, kvDecode(written))
	}
	return valueOk(key, written)
}

// valueOk is the same check on a value as the parser read it.
func valueOk(key, value string) bool {
	if key == "dbname" {
		return !dbnameExpands(value)
	}
	if good, ok := numberOk(key, value); ok {
		return good
	}
	words, ok := enumSettings[key]
	if !ok || value == "" {
		return true
	}
	for _, w := range words {
		if w == value {
			return true
		}
	}
	return false
}

func maskQuery(q string) string {
	pairs := strings.Split(q, "&")
	for i, pair := range pairs {
		eq := strings.IndexByte(pair, '=')
		if eq < 0 {
			continue
		}
		// libpq decodes query keys: "pass%77ord" is a password too.
		key := percentDecodeLoose(pair[:eq])
		if isSecretKey(key) || !settingOk(key, pair[eq+1:], true) {
			pairs[i] = pair[:eq+1] + mask
		}
	}
	return strings.Join(pairs, "&")
}

// maskPorts masks the authority of a URI, [p, end): libpq reads "app:pw"
// as host app, port pw. A port the agent refuses is masked with its host.
func maskPorts(s string, p, end int) string {
	var out []byte
	bracket := false
	host := 0 // where the current host starts in out
	if p < len(s) && s[p] == '@' {
		host = 1
	}
	for p < end {
		c := s[p]
		if c == '[' {
			bracket = true
		} else if c == ']' {
			bracket = false
		}
		if c == ',' && !bracket {
			host = len(out) + 1
		}
		if c != ':' || bracket {
			out = append(out, c)
			p++
			continue
		}
		q := p + 1
		for q < end && s[q] != ',' {
			q++
		}
		port := s[p+1 : q]
		if portOk(port) {
			out = append(append(out, ':'), port...)
		} else {
			out = append(out[:host:host], mask+":"+mask...)
		}
		p = q
	}
	return string(out)
}

// maskPathAndQuery masks the rest of a URI from p: the path up to the '?'
// is the dbname, masked when it is a connection string.
func maskPathAndQuery(s string, p int) string {
	q := strings.IndexByte(s[p:], '?')
	if q < 0 {
		q = len(s)
	} else {
		q += p
	}
	slash := strings.IndexByte(s[p:], '/')
	var out string
	if slash >= 0 && slash+p < q && !settingOk("dbname", s[slash+p+1:q], true) {
		out = s[p:slash+p+1] + mask
	} else {
		out = s[p:q]
	}
	if q < len(s) {
		return out + "?" + maskQuery(s[q+1:])
	}
	return out
}

// passwordSpan: where a URI's password is, as libpq or a human reads it:
// [the first ':' of the user info, the last '@'), or ok false.
func passwordSpan(s string, schemeLen int) (colon, at int, ok bool) {
	at = strings.LastIndexByte(s, '@')
	c := strings.IndexByte(s[schemeLen:], ':')
	if at < schemeLen || c < 0 || c+schemeLen > at {
		return 0, 0, false
	}
	colon = c + schemeLen
	query := strings.IndexByte(s[schemeLen:], '?')
	if query >= 0 && colon > query+schemeLen && strings.Contains(s[schemeLen:colon], "/") {
		return 0, 0, false
	}
	return colon, at, true
}

func maskURI(s string, schemeLen int) string {
	start := schemeLen
	out := s[:start]
	p := start
	if colon, at, ok := passwordSpan(s, schemeLen); ok {
		query := strings.IndexByte(s[start:], '?')
		out += s[start:colon+1] + mask
		if query >= 0 && query+start < at {
			// That '@' sits in a query value or the password holds a
			// '?': what follows it up to the next '&' may be a secret's.
			out += "@" + mask
			if amp := strings.IndexByte(s[at:], '&'); amp >= 0 {
				out += "&" + maskQuery(s[at+amp+1:])
			}
			return out
		}
		p = at
	}
	if p == start {
		q := start
		for q < len(s) && s[q] != '@' && s[q] != '/' {
			q++
		}
		if q < len(s) && s[q] == '@' {
			out += s[start:q]
			p = q
		}
	}
	end := p
	for end < len(s) && s[end] != '/' && s[end] != '?' {
		end++
	}
	return out + maskPorts(s, p, end) + maskPathAndQuery(s, end)
}

func maskKeyValue(s string) string {
	var out strings.Builder
	p, n := 0, len(s)
	for p < n {
		ws := p
		for p < n && isSpace(s[p]) {
			p++
		}
		out.WriteString(s[ws:p])
		if p >= n {
			break
		}
		key := p
		for p < n && s[p] != '=' && !isSpace(s[p]) {
			p++
		}
		keyEnd := p
		secret := isSecretKey(s[key:keyEnd])
		ws = p
		for p < n && isSpace(s[p]) {
			p++
		}
		if p >= n || s[p] != '=' {
			// Not key=value: this word and what follows may be anything.
			out.WriteString(mask)
			break
		}
		p++
		for p < n && isSpace(s[p]) {
			p++
		}
		out.WriteString(s[key:keyEnd] + s[ws:p])
		val := p
		if p < n && s[p] == '\'' {
			for p++; p < n && s[p] != '\''; p++ {
				if s[p] == '\\' && p+1 < n {
					p++
				}
			}
			if p < n {
				p++
			}
		} else {
			for ; p < n && !isSpace(s[p]); p++ {
				if s[p] == '\\' && p+1 < n {
					p++
				}
			}
		}
		written := s[val:p]
		if secret || !settingOk(s[key:keyEnd], written, false) {
			out.WriteString(mask)
		} else {
			out.WriteString(written)
		}
	}
	return out.String()
}

// encodeURIComponent as JavaScript's: the form a secret takes in a URI.
func encodeURIComponent(s string) string {
	const keep = "-_.!~*'()"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(keep, c) >= 0 {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
		}
	}
	return b.String()
}

// leaks: a secret the parser found in params (or in a dbname that is a
// connection string, a few levels down) still in out.
func leaks(out string, params map[string]string, depth int) bool {
	for k := range secretKeys {
		v := params[k]
		if len(v) >= 4 && (strings.Contains(out, v) || strings.Contains(out, encodeURIComponent(v))) {
			return true
		}
	}
	db := params["dbname"]
	if db == "" || !dbnameExpands(db) {
		return false
	}
	if (len(db) >= 4 && strings.Contains(out, db)) || depth >= 4 {
		return true
	}
	nested, err := ParseConninfo(db)
	if err != nil {
		return false
	}
	return leaks(out, nested, depth+1)
}

// MaskConninfo returns the connection string with every password (and
// any value libpq would not take) replaced by ****, for logs and messages:
// "postgresql://app:****@db/x", "host=db password=****". A string that
// cannot be parsed is masked whole. The same rules as libdbswap's
// dbswap_mask_conninfo().
func MaskConninfo(conninfo string) string {
	if conninfo == "" {
		return ""
	}
	params, err := ParseConninfo(conninfo)
	if err != nil {
		return mask
	}
	out := ""
	done := false
	for _, scheme := range uriSchemes {
		if !done && strings.HasPrefix(conninfo, scheme) {
			out, done = maskURI(conninfo, len(scheme)), true
		}
	}
	if !done {
		if strings.Contains(conninfo, "=") {
			out = maskKeyValue(conninfo)
		} else {
			out = mask
		}
	}
	// A password the parser found but the masking missed: all of it goes.
	if leaks(out, params, 0) {
		return mask
	}
	return out
}

// Redact returns text with the connection string and its secrets replaced
// by their masked forms: for messages from elsewhere (a driver's error)
// that may have picked one up.
func Redact(text, conninfo string) string {
	if conninfo == "" {
		return text
	}
	out := strings.ReplaceAll(text, conninfo, MaskConninfo(conninfo))
	var found []string
	hiddenValues(conninfo, &found, 0)
	all := map[string]bool{}
	for _, v := range found {
		// Blanks alone are no secret to look for.
		if strings.TrimSpace(v) == "" {
			continue
		}
		all[v] = true
		all[encodeURIComponent(v)] = true
	}
	secrets := make([]string, 0, len(all))
	for s := range all {
		secrets = append(secrets, s)
	}
	// The longest first: a secret may contain a shorter one.
	sort.Slice(secrets, func(i, j int) bool {
		if len(secrets[i]) != len(secrets[j]) {
			return len(secrets[i]) > len(secrets[j])
		}
		return secrets[i] < secrets[j]
	})
	for _, s := range secrets {
		out = strings.ReplaceAll(out, s, mask)
	}
	return out
}

// hiddenValues: what MaskConninfo hides of s, as the parser reads it.
func hiddenValues(s string, found *[]string, depth int) {
	params, err := ParseConninfo(s)
	if err != nil {
		return
	}
	for k, v := range params {
		if v == "" {
			continue
		}
		if isSecretKey(k) || !valueOk(k, v) {
			*found = append(*found, v)
		}
		if k == "dbname" && dbnameExpands(v) && depth < 4 {
			hiddenValues(v, found, depth+1)
		}
	}
	for _, scheme := range uriSchemes {
		if strings.HasPrefix(s, scheme) {
			if colon, at, ok := passwordSpan(s, len(scheme)); ok {
				written := s[colon+1 : at]
				*found = append(*found, written, percentDecodeLoose(written))
			}
			break
		}
	}
}
