<?php
// A small web application of the kind Outlier watches: pages read from
// PostgreSQL, uploads written to disk and typed with file(1) (apps shelling
// out to a tool is ordinary), a health endpoint for monitoring.
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
function db() {
    static $c = null;
    if ($c === null) {
        $c = pg_connect('host=127.0.0.1 port=5432 dbname=app user=app password=app connect_timeout=2');
    }
    return $c;
}
header('Content-Type: application/json');
switch ($path) {
case '/health':
    echo json_encode(['ok' => true, 'time' => time()]);
    break;
case '/api/items':
    $c = db();
    $r = $c ? pg_query($c, 'SELECT aid, abalance FROM pgbench_accounts ORDER BY random() LIMIT 10') : false;
    echo json_encode($r ? pg_fetch_all($r) : []);
    break;
case '/api/order':
    $c = db();
    if ($c) {
        pg_query_params($c, 'UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2', [rand(-50, 50), rand(1, 100000)]);
    }
    echo json_encode(['queued' => true]);
    break;
case '/upload':
    $dir = __DIR__ . '/uploads/' . date('Y-m-d');
    @mkdir($dir, 0755, true);
    $name = $dir . '/' . bin2hex(random_bytes(8)) . '.bin';
    file_put_contents($name, file_get_contents('php://input'));
    $type = trim(shell_exec('file --brief --mime-type ' . escapeshellarg($name)));
    echo json_encode(['stored' => basename($name), 'type' => $type]);
    break;
case '/report':
    $tmp = tempnam(sys_get_temp_dir(), 'rep');
    file_put_contents($tmp, str_repeat("line of report\n", 200));
    exec('gzip -9 ' . escapeshellarg($tmp), $out, $rc);
    @unlink($tmp . '.gz');
    echo json_encode(['rc' => $rc]);
    break;
default:
    echo json_encode(['page' => $path, 'version' => @file_get_contents(__DIR__ . '/VERSION')]);
}
