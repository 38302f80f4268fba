//! The schema of an installed `billing` as sorted lines of catalog facts, so that two installs
//! (an upgraded one and a fresh one, or the two editions) compare as text.

/// One line per catalog fact about the extension's objects (tables, columns in order, constraints,
/// indexes, triggers, policies, views, functions with their bodies and settings, types,
/// comments, privileges (as sets: their order in an ACL means nothing), extension membership,
/// pg_dump registration), sorted. Two installs are the same schema when their snapshots are equal.
pub const CATALOG_SNAPSHOT: &str = r#"
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'billing'),
rels AS (SELECT c.* FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM ns))
SELECT line FROM (
    SELECT format('relation %s kind=%s rls=%s force=%s options=%s acl=%s', r.relname, r.relkind,
                  r.relrowsecurity, r.relforcerowsecurity, r.reloptions,
                  (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(r.relacl) x)) AS line
    FROM rels r
    UNION ALL
    SELECT format('column %s.%s #%s %s notnull=%s default=%s identity=%s generated=%s compression=%s acl=%s',
                  r.relname, a.attname, row_number() OVER (PARTITION BY r.oid ORDER BY a.attnum),
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
                  a.attidentity, a.attgenerated, a.attcompression,
                  (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(a.attacl) x))
    FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = r.oid AND d.adnum = a.attnum
    UNION ALL
    SELECT format('constraint %s.%s %s', r.relname, co.conname, pg_get_constraintdef(co.oid))
    FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid)) FROM rels r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
    FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT format('policy %s.%s cmd=%s roles=%s using=%s check=%s permissive=%s', p.tablename, p.policyname,
                  p.cmd, p.roles, p.qual, p.with_check, p.permissive)
    FROM pg_policies p WHERE p.schemaname = 'billing'
    UNION ALL
    SELECT format('view %s %s', r.relname, pg_get_viewdef(r.oid)) FROM rels r WHERE r.relkind = 'v'
    UNION ALL
    SELECT format(E'function %s returns %s lang=%s volatility=%s strict=%s secdef=%s parallel=%s config=%s args=%s acl=%s body:\n%s',
                  p.oid::regprocedure, pg_get_function_result(p.oid), l.lanname, p.provolatile, p.proisstrict,
                  p.prosecdef, p.proparallel, p.proconfig, pg_get_function_arguments(p.oid),
                  (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(p.proacl) x),
                  p.prosrc)
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = (SELECT oid FROM ns)
    UNION ALL
    SELECT format('type %s type=%s', t.typname, t.typtype) FROM pg_type t
    WHERE t.typnamespace = (SELECT oid FROM ns) AND t.typtype <> 'b'
      AND NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
    UNION ALL
    SELECT format('enum %s %s %s', t.typname, e.enumsortorder, e.enumlabel)
    FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid WHERE t.typnamespace = (SELECT oid FROM ns)
    UNION ALL
    SELECT format('comment %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
    FROM pg_description d
    WHERE (pg_identify_object(d.classoid, d.objoid, d.objsubid)).schema = 'billing'
    UNION ALL
    SELECT format('member %s', pg_describe_object(d.classid, d.objid, d.objsubid))
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'stripe_billing' AND d.deptype = 'e'
    UNION ALL
    SELECT format('pg_dump keeps %s where %s', c::regclass, cond)
    FROM pg_extension e, unnest(e.extconfig::regclass[], e.extcondition) AS u(c, cond)
    WHERE e.extname = 'stripe_billing'
    UNION ALL
    SELECT format('event trigger %s on %s tags %s runs %s enabled=%s', e.evtname, e.evtevent, e.evttags,
                  e.evtfoid::regprocedure, e.evtenabled)
    FROM pg_event_trigger e WHERE e.evtfoid IN (SELECT oid FROM pg_proc WHERE pronamespace = (SELECT oid FROM ns))
    UNION ALL
    SELECT format('schema billing acl=%s', (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(n.nspacl) x)) FROM pg_namespace n WHERE n.nspname = 'billing'
) facts ORDER BY line
"#;

/// The catalog snapshot of the database `client` is connected to.
pub async fn catalog_snapshot(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(CATALOG_SNAPSHOT, &[])
        .await
        .expect("catalog snapshot query")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// What differs between two snapshots: lines only in `left`, then lines only in `right`.
pub fn snapshot_diff(left: &[String], right: &[String]) -> (Vec<String>, Vec<String>) {
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        let set: std::collections::HashSet<&String> = b.iter().collect();
        a.iter().filter(|l| !set.contains(l)).cloned().collect()
    };
    (only(left, right), only(right, left))
}
