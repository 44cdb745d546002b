/* l_yaml.c - YAML documents into Lua tables through libyaml's event parser,
 * for experiment configs, dataset class tables and sweep specs.
 *   value, lines = yaml_load(text, name)
 * lines maps each table of value to {key_or_index = line}, so that a checker
 * can say which line of the file holds a wrong value. Plain scalars become
 * numbers, booleans (true/false/yes/no) or nil (null, ~, empty); quoted
 * scalars stay strings. Errors read "name:line:column: problem". */
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "lkd.h"

typedef struct {
    lua_State *L;
    yaml_parser_t parser;
    const char *name;
    int lines_index; /* stack index of the lines table */
    int anchors_index;
    char error[512];
} reader;

static int next_event(reader *r, yaml_event_t *e) {
    if (!yaml_parser_parse(&r->parser, e)) {
        snprintf(r->error, sizeof r->error, "%s:%d:%d: %s%s%s", r->name, (int)r->parser.problem_mark.line + 1,
                 (int)r->parser.problem_mark.column + 1, r->parser.problem ? r->parser.problem : "syntax error",
                 r->parser.context ? " " : "", r->parser.context ? r->parser.context : "");
        return 0;
    }
    return 1;
}

static void push_scalar(reader *r, const yaml_event_t *e) {
    lua_State *L = r->L;
    const char *v = (const char *)e->data.scalar.value;
    size_t len = e->data.scalar.length;
    if (e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        lua_pushlstring(L, v, len);
        return;
    }
    if (len == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0) {
        lua_pushnil(L);
    } else if (strcmp(v, "true") == 0 || strcmp(v, "True") == 0 || strcmp(v, "yes") == 0) {
        lua_pushboolean(L, 1);
    } else if (strcmp(v, "false") == 0 || strcmp(v, "False") == 0 || strcmp(v, "no") == 0) {
        lua_pushboolean(L, 0);
    } else {
        char *end;
        double d = strtod(v, &end);
        if (end != v && *end == 0) lua_pushnumber(L, d);
        else lua_pushlstring(L, v, len);
    }
}

/* lines[table][key] = line; the table is at index t, the key on top. */
static void record_line(reader *r, int t, int line) {
    lua_State *L = r->L;
    lua_pushvalue(L, t);
    lua_rawget(L, r->lines_index);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, t);
        lua_pushvalue(L, -2);
        lua_rawset(L, r->lines_index);
    }
    lua_pushvalue(L, -2); /* key */
    lua_pushinteger(L, line);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static int parse_node(reader *r, yaml_event_t *e);

static void remember_anchor(reader *r, const yaml_char_t *anchor) {
    if (!anchor) return;
    lua_pushstring(r->L, (const char *)anchor);
    lua_pushvalue(r->L, -2);
    lua_rawset(r->L, r->anchors_index);
}

/* Parses the node that starts with event e (consumed) and pushes its value. */
static int parse_node(reader *r, yaml_event_t *e) {
    lua_State *L = r->L;
    luaL_checkstack(L, 8, "YAML nesting too deep");
    switch (e->type) {
    case YAML_SCALAR_EVENT:
        push_scalar(r, e);
        remember_anchor(r, e->data.scalar.anchor);
        yaml_event_delete(e);
        return 1;
    case YAML_ALIAS_EVENT:
        lua_pushstring(L, (const char *)e->data.alias.anchor);
        lua_rawget(L, r->anchors_index);
        yaml_event_delete(e);
        return 1;
    case YAML_SEQUENCE_START_EVENT: {
        yaml_char_t *anchor = e->data.sequence_start.anchor ? (yaml_char_t *)strdup((char *)e->data.sequence_start.anchor) : NULL;
        yaml_event_delete(e);
        lua_newtable(L);
        int t = lua_gettop(L);
        for (int i = 1;; i++) {
            yaml_event_t item;
            if (!next_event(r, &item)) return free(anchor), 0;
            if (item.type == YAML_SEQUENCE_END_EVENT) {
                yaml_event_delete(&item);
                break;
            }
            int line = (int)item.start_mark.line + 1;
            if (!parse_node(r, &item)) return free(anchor), 0;
            lua_rawseti(L, t, i);
            lua_pushinteger(L, i);
            record_line(r, t, line);
            lua_pop(L, 1);
        }
        remember_anchor(r, anchor);
        free(anchor);
        return 1;
    }
    case YAML_MAPPING_START_EVENT: {
        yaml_char_t *anchor = e->data.mapping_start.anchor ? (yaml_char_t *)strdup((char *)e->data.mapping_start.anchor) : NULL;
        yaml_event_delete(e);
        lua_newtable(L);
        int t = lua_gettop(L);
        for (;;) {
            yaml_event_t key;
            if (!next_event(r, &key)) return free(anchor), 0;
            if (key.type == YAML_MAPPING_END_EVENT) {
                yaml_event_delete(&key);
                break;
            }
            int line = (int)key.start_mark.line + 1;
            if (key.type != YAML_SCALAR_EVENT) {
                snprintf(r->error, sizeof r->error, "%s:%d: mapping keys must be plain values", r->name, line);
                yaml_event_delete(&key);
                return free(anchor), 0;
            }
            lua_pushlstring(L, (const char *)key.data.scalar.value, key.data.scalar.length);
            yaml_event_delete(&key);
            lua_pushvalue(L, -1);
            lua_rawget(L, t);
            if (!lua_isnil(L, -1)) {
                snprintf(r->error, sizeof r->error, "%s:%d: key '%s' appears twice", r->name, line, lua_tostring(L, -2));
                return free(anchor), 0;
            }
            lua_pop(L, 1);
            yaml_event_t value;
            if (!next_event(r, &value) || !parse_node(r, &value)) return free(anchor), 0;
            lua_pushvalue(L, -2);
            record_line(r, t, line);
            lua_pop(L, 1);
            lua_rawset(L, t);
        }
        remember_anchor(r, anchor);
        free(anchor);
        return 1;
    }
    default:
        snprintf(r->error, sizeof r->error, "%s:%d: unexpected YAML event", r->name, (int)e->start_mark.line + 1);
        yaml_event_delete(e);
        return 0;
    }
}

static int l_yaml_load(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    reader r = {.L = L, .name = luaL_optstring(L, 2, "yaml")};
    lua_settop(L, 2);
    lua_newtable(L);
    r.lines_index = lua_gettop(L);
    lua_newtable(L);
    r.anchors_index = lua_gettop(L);
    if (!yaml_parser_initialize(&r.parser)) return luaL_error(L, "yaml: cannot initialise the parser");
    yaml_parser_set_input_string(&r.parser, (const unsigned char *)text, len);
    yaml_event_t e;
    int ok = 1, have_value = 0;
    while (ok) {
        ok = next_event(&r, &e);
        if (!ok) break;
        yaml_event_type_t type = e.type;
        if (type == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&e);
            break;
        }
        if (type == YAML_STREAM_START_EVENT || type == YAML_DOCUMENT_START_EVENT || type == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&e);
            continue;
        }
        if (have_value) {
            snprintf(r.error, sizeof r.error, "%s:%d: only one document is supported", r.name, (int)e.start_mark.line + 1);
            yaml_event_delete(&e);
            ok = 0;
            break;
        }
        ok = parse_node(&r, &e);
        have_value = ok;
    }
    yaml_parser_delete(&r.parser);
    if (!ok) return luaL_error(L, "%s", r.error);
    if (!have_value) lua_pushnil(L);
    lua_pushvalue(L, r.lines_index);
    return 2;
}

void lkd_open_yaml(lua_State *L) {
    lua_pushcfunction(L, l_yaml_load);
    lua_setfield(L, -2, "yaml_load");
}
