// TMRL telemetry: streams the car's state to tmrl-trackmania over TCP on 127.0.0.1.
//
// Wire format (version 1): after a client connects, one record per game frame, back to back, no header.
// A record is 11 little-endian float32 values (44 bytes):
//   speed (km/h), distance (m), x, y, z (position, y up), steer (-1..1), gas (0..1), brake (0 or 1),
//   finished (0 or 1), gear, rpm.
// One client at a time; when it goes away the plugin listens again, so tmrl can reconnect at any time.

[Setting name="Port" description="TCP port tmrl connects to (trackmania.telemetry_port)"]
uint16 Setting_Port = 9000;

[Setting name="Log connections"]
bool Setting_Verbose = true;

const uint RECORD_FLOATS = 11;

void Log(const string &in message)
{
    if (Setting_Verbose) {
        print("[TMRL] " + message);
    }
}

// The local player's script API, or null while no race is running (menus, loading, editor).
CSmScriptPlayer@ LocalPlayer(CSmArenaClient@ playground)
{
    if (playground is null || playground.Arena is null || playground.Arena.Players.Length == 0) {
        return null;
    }
    auto player = cast<CSmPlayer>(playground.Arena.Players[0]);
    if (player is null) {
        return null;
    }
    return cast<CSmScriptPlayer>(player.ScriptAPI);
}

bool IsFinished(CSmArenaClient@ playground)
{
    if (playground.GameTerminals.Length == 0) {
        return false;
    }
    return playground.GameTerminals[0].UISequence_Current == SGamePlaygroundUIConfig::EUISequence::Finish;
}

// Fill buf with one record; false when there is nothing to send this frame.
bool WriteRecord(MemoryBuffer@ buf)
{
    auto app = cast<CTrackMania>(GetApp());
    if (app is null) {
        return false;
    }
    auto playground = cast<CSmArenaClient>(app.CurrentPlayground);
    auto api = LocalPlayer(playground);
    if (api is null) {
        return false;
    }
    buf.Seek(0, 0);
    buf.Write(float(api.Speed * 3.6f));  // ManiaScript gives m/s; the record carries km/h
    buf.Write(float(api.Distance));
    buf.Write(float(api.Position.x));
    buf.Write(float(api.Position.y));
    buf.Write(float(api.Position.z));
    buf.Write(float(api.InputSteer));
    buf.Write(float(api.InputGasPedal));
    buf.Write(api.InputIsBraking ? 1.0f : 0.0f);
    buf.Write(IsFinished(playground) ? 1.0f : 0.0f);
    buf.Write(float(api.EngineCurGear));
    buf.Write(float(api.EngineRpm));
    buf.Seek(0, 0);
    return true;
}

// Stream records to one connected client until it disconnects.
void Serve(Net::Socket@ client)
{
    MemoryBuffer@ buf = MemoryBuffer(RECORD_FLOATS * 4);
    while (true) {
        if (WriteRecord(buf)) {
            if (!client.Write(buf)) {
                Log("client disconnected");
                return;
            }
        }
        yield();  // once per game frame
    }
}

void Main()
{
    while (true) {
        auto server = Net::Socket();
        if (!server.Listen("127.0.0.1", Setting_Port)) {
            error("[TMRL] cannot listen on 127.0.0.1:" + Setting_Port + " (is another program using this port?)");
            sleep(5000);
            continue;
        }
        Log("listening on 127.0.0.1:" + Setting_Port);
        Net::Socket@ client = null;
        while (client is null) {
            yield();
            @client = server.Accept();
        }
        Log("client connected");
        Serve(client);
        client.Close();
        server.Close();
    }
}
